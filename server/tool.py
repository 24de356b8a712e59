"""qpart: the operator's tool (train, list and profile models, run the demo).

    qpart train fc6 --models ./model-repo
    qpart models --models ./model-repo
    qpart profile fc6 --models ./model-repo
    qpart demo
"""
import argparse
import pathlib
import sys

from qpart.common import data
from qpart.common.errors import QpartError

DEFAULT_MODELS = pathlib.Path("model-repo")


def cmd_train(args) -> None:
    from qpart.server import train
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
    from qpart.server.repository import ModelRepository
    for model in ModelRepository(args.models):
        weights = sum(layer.weight_count for layer in model.profile.layers)
        print(f"{model.name:<10} {model.version}  L={model.num_layers}  {weights:>9,} parameters  "
              f"test accuracy {model.card.get('float_test_accuracy', 0):.2f}%  {model.card.get('description', '')}")


def cmd_profile(args) -> None:
    from qpart.server.repository import ModelRepository
    model = ModelRepository(args.models).get(args.model)
    print(f"{model.name} ({model.version}): input {list(model.profile.input_shape)}, {model.num_layers} learnable layers")
    print(f"{'i':>3} {'name':<12} {'kind':<7} {'weights':>10} {'MACs':>12} {'input':<16} {'output':<16} {'cut p=i sends':>14}")
    for layer in model.profile.layers:
        sends = 1
        for d in model.profile.activation_shape(layer.index):
            sends *= d
        print(f"{layer.index:>3} {layer.name:<12} {layer.kind:<7} {layer.weight_count:>10,} {layer.macs:>12,} "
              f"{str(list(layer.input_shape)):<16} {str(list(layer.output_shape)):<16} {sends:>14,}")
    total_w = sum(layer.weight_count for layer in model.profile.layers)
    total_m = sum(layer.macs for layer in model.profile.layers)
    print(f"{'':>3} {'total':<12} {'':<7} {total_w:>10,} {total_m:>12,}")


def cmd_demo(args) -> None:
    from qpart.server import demo
    demo.run(args.models, args.model, args.count, args.data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qpart", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, func, help: str, model_arg: str | None = None) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        p.set_defaults(func=func)
        p.add_argument("--models", type=pathlib.Path, default=DEFAULT_MODELS, help="model repository (default %(default)s)")
        p.add_argument("--data", help=f"directory of MNIST-format IDX files (default ${data.DATA_ENV} or {data.DEFAULT_DATA_DIR})")
        if model_arg == "one":
            p.add_argument("model", help="model name")
        return p

    p = command("train", cmd_train, "train zoo models into the repository")
    p.add_argument("model", nargs="+", help="zoo model(s): fc6, lenet, vgg8")
    p.add_argument("--epochs", type=int, help="passes over the training split (default: the zoo's)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, help="Adam learning rate (default: the zoo's)")
    p.add_argument("--validation-size", type=int, default=10000, help="training images held out for calibration")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-limit", type=int, default=0, help="train on only this many images (0: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    command("models", cmd_models, "list the repository's models")
    command("profile", cmd_profile, "per-layer MACs, weights and activation sizes", "one")
    p = command("demo", cmd_demo, "server and device as separate processes on 1,000 test images")
    p.add_argument("--model", default="fc6", help="model (trained if absent; default %(default)s)")
    p.add_argument("--count", type=int, default=1000, help="test images (default %(default)s)")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except QpartError as e:
        print(f"qpart {args.command}: {e.status}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
