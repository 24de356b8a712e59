"""`qpart train | models | profile`: the repository's models."""
from qpart.cli.common import command


def cmd_train(args) -> None:
    from qpart.server.training import train
    config = train.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                               validation_size=args.validation_size, seed=args.seed, train_limit=args.train_limit,
                               progress=not args.no_progress)
    for name in args.model:
        model = train.train(name, args.models, args.data, config)
        card = model.card
        print(f"{name}: version {model.version}, float test accuracy {card['float_test_accuracy']:.2f}% on "
              f"{card['test_samples']} images, validation {card['float_validation_accuracy']:.2f}%, "
              f"{card['training']['seconds']} s -> {model.directory}")


def cmd_models(args) -> None:
    from qpart.server.models.repository import ModelRepository
    for model in ModelRepository(args.models):
        weights = sum(layer.weight_count for layer in model.profile.layers)
        print(f"{model.name:<10} {model.version}  L={model.num_layers}  {weights:>9,} parameters  "
              f"test accuracy {model.card.get('float_test_accuracy', 0):.2f}%  {model.card.get('description', '')}")


def cmd_profile(args) -> None:
    import math
    from qpart.server.models.repository import ModelRepository
    model = ModelRepository(args.models).get(args.model)
    profile = model.profile
    print(f"{model.name} ({model.version}): input {list(profile.input_shape)}, {model.num_layers} learnable layers")
    print(f"{'i':>3} {'name':<12} {'kind':<7} {'weights':>10} {'MACs':>12} {'input':<16} {'output':<16} "
          f"{'cut p=i sends':>14}")
    for layer in profile.layers:
        sends = math.prod(profile.activation_shape(layer.index))
        print(f"{layer.index:>3} {layer.name:<12} {layer.kind:<7} {layer.weight_count:>10,} {layer.macs:>12,} "
              f"{str(list(layer.input_shape)):<16} {str(list(layer.output_shape)):<16} {sends:>14,}")
    total_w = sum(layer.weight_count for layer in profile.layers)
    total_m = sum(layer.macs for layer in profile.layers)
    print(f"{'':>3} {'total':<12} {'':<7} {total_w:>10,} {total_m:>12,}")


def register(sub) -> None:
    p = command(sub, "train", cmd_train, "train zoo models into the repository")
    p.add_argument("model", nargs="+", help="zoo model(s): fc6, lenet, vgg8")
    p.add_argument("--epochs", type=int, help="passes over the training split (default: the zoo's)")
    p.add_argument("--batch-size", type=int, default=128, help="samples per optimizer step (default %(default)s)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: the zoo's)")
    p.add_argument("--validation-size", type=int, default=10000, help="training images held out for calibration")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the initialization and the shuffling")
    p.add_argument("--train-limit", type=int, default=0, help="train on only this many images (0: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    command(sub, "models", cmd_models, "list the repository's models")
    command(sub, "profile", cmd_profile, "per-layer MACs, weights and activation sizes (eqs 1-2)", "one")
