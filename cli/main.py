"""qpart: the operator's tool.

    qpart train fc6 lenet vgg8          train zoo models into the repository (default ./model-repo)
    qpart models                        list the repository
    qpart profile vgg8                  per-layer weights, MACs and activation sizes (eqs 1-2)
    qpart calibrate fc6                 the accuracy model: noise coefficients, alpha, t_i, additivity
    qpart catalog fc6 lenet vgg8        build the offline catalog of certified splits (Algorithm 1)
    qpart plan fc6 --device rpi4 --rate-mbps 5 --budget 1     every candidate priced, the choice marked
    qpart token DEVICE [--allow fc6]    a new bearer token and its entry for the server's devices file
With the harness installed (the dev extra):
    qpart demo                          server and device as separate processes on 1,000 test images
    qpart demo-text                     a language model's text generated through a split, the same way
    qpart testbed up --rate 5 --delay 10          two network namespaces on a shaped veth (root)
    qpart testbed shape --rate 20 | fade ... | relay ... | status | down
    qpart bench [--reduced]             the six policies end to end on a shaped link (root)
"""
import argparse
import importlib.metadata
import sys

from qpart.cli import models, planning, security
from qpart.common.errors import QpartError

PLUGIN_GROUP = "qpart.commands"   # entry points: register(subparsers) adds a package's command group


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qpart", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in (models, planning, security):
        group.register(sub)
    for entry in importlib.metadata.entry_points(group=PLUGIN_GROUP):
        try:
            entry.load()(sub)
        except ImportError as e:   # the plugin's own dependencies are missing
            print(f"qpart: the {entry.name!r} commands are unavailable ({e}); install qpart[dev]", file=sys.stderr)
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
