"""The console scripts (`qpart-server`, `qpart`, `qpart-device`): each role's command, and one line naming
the extra to install when this install lacks the part a command needs.

Every install gets every console script (pip cannot install a script per extra), so a board that
installed the device part (`qpart[device]`: numpy, grpcio, protobuf) has `qpart-server` and `qpart`
too. Run there, a command that needs the server part ends with one line on stderr and exit status
EXIT_MISSING_PART instead of a traceback:

    qpart-server: this install lacks torch, which the server part needs: install the qpart[server] extra, ...

Only the modules the extras bring are hinted at (MODULE_EXTRAS); any other missing module (one that a
user's own model imports, say) is raised as before. The commands are named by string, so this module
imports no other qpart package until a command runs.
"""
import importlib
import sys

EXIT_MISSING_PART = 3
# the top-level name of a module an extra installs -> that extra (pyproject.toml, [project.optional-dependencies])
MODULE_EXTRAS = {
    "numpy": "device", "grpc": "device", "google": "device", "tomli": "device",
    "torch": "server", "safetensors": "server", "tqdm": "server", "prometheus_client": "server",
    "grpc_health": "server", "grpc_reflection": "server",
    "PIL": "images",
    "matplotlib": "dev", "hypothesis": "dev", "yaml": "dev", "cryptography": "dev",
}
PARTS = {"device": "the device part", "server": "the server part", "images": "decoding image files",
         "dev": "the harness"}


def hint(prog: str, module: str, extra: str) -> str:
    """The one line a command prints when `module` (installed by `extra`) is missing."""
    return (f"{prog}: this install lacks {module}, which {PARTS[extra]} needs: install the qpart[{extra}] extra, "
            f"pip install '<qpart checkout or wheel>[{extra}]' (README, \"Install\")")


def run(prog: str, module: str, function: str = "main") -> int:
    """Import `module` and return what its `function`() returns; a missing module that an extra installs
    ends the command with the hint and EXIT_MISSING_PART."""
    try:
        return getattr(importlib.import_module(module), function)()
    except ModuleNotFoundError as e:
        top = (e.name or "").split(".")[0]
        if top not in MODULE_EXTRAS:
            raise
        print(hint(prog, top, MODULE_EXTRAS[top]), file=sys.stderr)
        return EXIT_MISSING_PART


def server() -> int:
    """`qpart-server`: needs qpart[server]."""
    return run("qpart-server", "qpart.server.serving.main")


def tool() -> int:
    """`qpart`: its commands need qpart[server] (testbed, bench and demo: qpart[dev])."""
    return run("qpart", "qpart.cli.main")


def device() -> int:
    """`qpart-device`: the base install (qpart[device])."""
    return run("qpart-device", "qpart.device.main")
