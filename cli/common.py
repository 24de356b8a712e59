"""What every `qpart` command group shares: the repository and data options, and a way to register
a command."""
import argparse
import pathlib

from qpart.common import data

DEFAULT_MODELS = pathlib.Path("model-repo")


def command(sub, name: str, func, help: str, model_arg: str | None = None, repository: bool = True,
            **parser_kwargs) -> argparse.ArgumentParser:
    """Add subcommand `name` running func(args); with model_arg "one" it takes one model name."""
    p = sub.add_parser(name, help=help, description=parser_kwargs.pop("description", help), **parser_kwargs)
    p.set_defaults(func=func)
    if repository:
        p.add_argument("--models", type=pathlib.Path, default=DEFAULT_MODELS,
                       help="model repository (default %(default)s)")
        p.add_argument("--data", help="the data: fashion-mnist, a directory of MNIST IDX files, a .npz of x and y, or "
                                      "an image folder (default: what the model card records; Fashion-MNIST from "
                                      f"${data.DATA_ENV} or {data.DEFAULT_DATA_DIR})")
    if model_arg == "one":
        p.add_argument("model", help="model name")
    return p
