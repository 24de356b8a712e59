"""`qpart train | import | models | profile`: the repository's models."""
import argparse
import pathlib

from qpart.cli.common import command
from qpart.common.errors import InvalidArgument
from qpart.common.table import fit


def cmd_train(args) -> None:
    from qpart.server.training import lm_train, train, zoo
    unknown = [n for n in args.model if n not in lm_train.LM_ZOO and n not in zoo.ZOO]
    if unknown:
        raise InvalidArgument(f"unknown zoo model {unknown[0]!r}; choose one of {', '.join(zoo.ZOO)} or the language "
                              f"models {', '.join(lm_train.LM_ZOO)}")
    for name in [n for n in args.model if n in lm_train.LM_ZOO]:
        model = lm_train.train(name, args.models, lm_train.LMTrainConfig(
            steps=args.steps, learning_rate=args.lr, seed=args.seed, progress=not args.no_progress, text=args.text))
        card = model.card
        print(f"{name}: version {model.version}, float next-token top-1 {card['float_test_top1']:.2f}%, perplexity "
              f"{card['float_test_perplexity']:.2f} on {card['test_tokens']:,} test tokens, "
              f"{card['training']['seconds']} s -> {model.directory}")
    args.model = [n for n in args.model if n not in lm_train.LM_ZOO]
    config = train.TrainConfig(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
                               validation_size=args.validation_size, seed=args.seed, train_limit=args.train_limit,
                               progress=not args.no_progress, test_limit=args.test_limit)
    for name in args.model:
        model = train.train(name, args.models, args.data, config)
        card = model.card
        print(f"{name}: version {model.version}, float test accuracy {card['float_test_accuracy']:.2f}% on "
              f"{card['test_samples']} images, validation {card['float_validation_accuracy']:.2f}%, "
              f"{card['training']['seconds']} s -> {model.directory}")


def _numbers(kind, count: int | None = None):
    """argparse type: comma-separated numbers (exactly `count` of them when given)."""
    def parse(text: str):
        try:
            values = tuple(kind(v) for v in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of {kind.__name__}") from None
        if count is not None and len(values) != count:
            raise argparse.ArgumentTypeError(f"{text!r}: give {count} values")
        return values
    return parse


def cmd_import(args) -> None:
    from qpart.server.models import importer, lm_layouts
    if args.onnx:
        return import_onnx(args)
    if not args.module:
        raise InvalidArgument("give --module MODULE:FACTORY (a PyTorch model) or --onnx FILE (an ONNX model)")
    module = importer.load_factory(args.module)()
    if args.weights:
        importer.load_weights(module, args.weights)
    if lm_layouts.is_language_model(module):
        return import_language_model(args, module)
    if not args.input_shape:
        raise InvalidArgument("--input-shape C,H,W is needed for a vision model")
    preprocessing = _preprocessing(args, args.input_shape)
    model = importer.import_model(args.models, args.name, module, args.data or "fashion-mnist", preprocessing,
                                  args.description, args.validation_size, args.seed)
    _imported(args, model)


def _preprocessing(args, shape):
    from qpart.common.preprocess import Preprocessing
    from qpart.server.models import datasets
    preprocessing = Preprocessing(channels=shape[0], resize=args.resize or (0, 0), crop=args.crop or (0, 0),
                                  scale=args.scale, mean=args.mean or (), std=args.std or ())
    images, _ = datasets.source({"data": args.data or "fashion-mnist"}).part("train")
    produced = preprocessing.output_shape(*images.shape[1:3])
    if produced != tuple(shape):
        raise InvalidArgument(f"the data's {images.shape[1]}x{images.shape[2]} images become {list(produced)} with this "
                              f"preprocessing, not the model's input {list(shape)}: set --resize/--crop")
    return preprocessing


def import_onnx(args) -> None:
    from qpart.server.models import onnx_import
    onnx_model = onnx_import.load(args.onnx)
    declared = onnx_import.declared_shape(onnx_model)
    shape = args.input_shape or declared
    if len(shape) != 3 or any(d is None for d in shape):
        raise InvalidArgument(f"the ONNX input is [N, {', '.join(str(d or '?') for d in declared)}]: give "
                              f"--input-shape C,H,W")
    model = onnx_import.import_onnx(args.models, args.name, args.onnx, args.data or "fashion-mnist",
                                    _preprocessing(args, shape), args.description, args.validation_size, args.seed,
                                    model=onnx_model)
    _imported(args, model)


def _imported(args, model) -> None:
    card = model.card
    print(f"{model.name}: version {model.version}, {model.num_nodes} nodes, float test accuracy "
          f"{card['float_test_accuracy']:.2f}% on {card['test_samples']} samples -> {model.directory}")
    print(f"next: qpart catalog {model.name} --models {args.models}")


def import_language_model(args, module) -> None:
    from qpart.server.models import lm_import
    model = lm_import.import_language_model(args.models, args.name, module, args.text, args.description)
    card = model.card
    print(f"{model.name}: version {model.version}, {model.num_nodes} nodes, context {model.spec.sequence.max_positions}"
          f", float next-token top-1 {card['float_test_top1']:.2f}%, perplexity {card['float_test_perplexity']:.2f} on "
          f"{card['test_tokens']:,} test tokens -> {model.directory}")


def cmd_models(args) -> None:
    from qpart.server.models.repository import ModelRepository
    for model in ModelRepository(args.models):
        weights = sum(node.weight_count for node in model.profile.nodes)
        print(f"{model.name:<15} {model.version}  {model.num_nodes:>3} nodes  {weights:>9,} parameters  input "
              f"{list(model.profile.input_shape)}  test accuracy {model.card.get('float_test_accuracy', 0):.2f}%  "
              f"{model.card.get('description', '')}")


def cmd_profile(args) -> None:
    from qpart.server.models.repository import ModelRepository
    model = ModelRepository(args.models).get(args.model)
    profile = model.profile
    offered = {c.cut: c for c in model.cuts()}
    print(f"{model.name} ({model.version}): input {profile.input_name} {list(profile.input_shape)}, {profile.num_nodes} "
          f"nodes; preprocessing {model.preprocessing.to_dict()}")
    print("row c is cut c: the nodes above the row run on the device, 'sends' lists what crosses the cut "
          "(-: more tensors than the server offers)")
    print(f"{'c':>4} {'node':<28} {'op':<19} {'params':>9} {'MACs':>11} {'output':<15} {'device MACs':>12}  sends")
    for node in profile.nodes:
        cut = offered.get(node.index)
        sends = " + ".join(f"{t} {list(s)}" for t, s in zip(cut.tensors, cut.shapes)) if cut else "-"
        device = f"{cut.device_macs:,}" if cut else ""
        print(f"{node.index:>4} {fit(node.name, 28):<28} {node.op:<19} {node.weight_count:>9,} {node.macs:>11,} "
              f"{str(list(node.shape)):<15} {device:>12}  {sends}")
    print(f"{profile.num_nodes:>4} {'(everything on the device)':<28} {'':<19} "
          f"{sum(n.weight_count for n in profile.nodes):>9,} {sum(n.macs for n in profile.nodes):>11,}")


def register(sub) -> None:
    p = command(sub, "train", cmd_train, "train zoo models into the repository")
    p.add_argument("model", nargs="+", help="zoo model name(s), e.g. fc6 resnet8-96, or the language models "
                                            "gpt-fortunes draft-fortunes-1 draft-fortunes-2 (an unknown name lists "
                                            "them)")
    p.add_argument("--epochs", type=int, help="passes over the training split (default: the zoo's)")
    p.add_argument("--steps", type=int, help="a language model's optimizer steps (default: the zoo's)")
    p.add_argument("--text", default="fortunes", help="a language model's text: fortunes or a directory of *.txt "
                                                      "documents (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=128, help="samples per optimizer step (default %(default)s)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default: the zoo's)")
    p.add_argument("--validation-size", type=int, default=10000, help="training images held out for calibration")
    p.add_argument("--seed", type=int, default=0, help="seeds the split, the initialization and the shuffling")
    p.add_argument("--train-limit", type=int, help="train on only this many images (0: all; default: the zoo's)")
    p.add_argument("--test-limit", type=int, default=0,
                   help="measure the card's float test accuracy on the first this many test images (0: all)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = command(sub, "import", cmd_import, "import your own nn.Module or ONNX file with its data (traced with "
                                           "torch.fx, checked against the module or onnxruntime on real inputs); a "
                                           "language model (transformers' GPT-2 or Llama, nanoGPT's GPT) is "
                                           "converted by its layout and checked "
                                           "against its logits on text")
    p.set_defaults(data=None)
    p.add_argument("name", help="the model's name in the repository (1-64 letters, digits, _ . -)")
    p.add_argument("--module", help="MODULE:FACTORY, e.g. mypkg.nets:build or nets.py:build; "
                                    "FACTORY() returns the nn.Module")
    p.add_argument("--onnx", type=pathlib.Path,
                   help="an ONNX file (opset 13 or later) instead of --module: its graph mapped onto the description "
                        "and checked against onnxruntime running the file on the data (needs qpart[onnx])")
    p.add_argument("--weights", type=pathlib.Path,
                   help="its weights: a .safetensors file, or a torch state dict (read with weights_only=True)")
    p.add_argument("--input-shape", type=_numbers(int, 3), help="C,H,W of one input sample (vision models)")
    p.add_argument("--text", default="fortunes", help="a language model's text: fortunes (the Debian package) or a "
                                                      "directory of *.txt documents (default %(default)s)")
    p.add_argument("--resize", type=_numbers(int, 2), help="H,W: resize the data's images (bilinear) first")
    p.add_argument("--crop", type=_numbers(int, 2), help="H,W: then crop at the centre")
    p.add_argument("--scale", type=float, default=1 / 255, help="factor on the uint8 pixels (default 1/255)")
    p.add_argument("--mean", type=_numbers(float), help="per-channel mean subtracted after scaling")
    p.add_argument("--std", type=_numbers(float), help="per-channel standard deviation divided by")
    p.add_argument("--description", default="", help="one line shown in ListModels")
    p.add_argument("--validation-size", type=int, default=10000,
                   help="training samples held out for calibration (at most half; default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seeds the validation split")
    command(sub, "models", cmd_models, "list the repository's models")
    command(sub, "profile", cmd_profile, "per-layer MACs, weights and activation sizes (eqs 1-2)", "one")
