"""Regenerate the Python code for the protobuf contract in protos/qpart/v1.

Usage: python scripts/generate_protos.py [OUT_DIR]
Writes *_pb2.py, *_pb2.pyi and *_pb2_grpc.py next to the .proto files (or under OUT_DIR,
which tests use to check that the checked-in code is not stale).
"""
import pathlib
import sys

from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"


def generate(out_dir: pathlib.Path = PROTOS) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    sources = sorted(str(p.relative_to(PROTOS)) for p in (PROTOS / "qpart" / "v1").glob("*.proto"))
    args = ["grpc_tools.protoc", f"-I{PROTOS}", f"--python_out={out_dir}", f"--pyi_out={out_dir}",
            f"--grpc_python_out={out_dir}", *sources]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else PROTOS)
