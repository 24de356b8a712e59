"""The contract: generated code is fresh, and every message and field carries a comment."""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "protos" / "qpart" / "v1"


def test_generated_code_is_not_stale(tmp_path):
    subprocess.run([sys.executable, str(ROOT / "scripts" / "generate_protos.py"), str(tmp_path)], check=True)
    generated = sorted(p.name for p in (tmp_path / "qpart" / "v1").iterdir())
    checked_in = sorted(p.name for p in PROTO_DIR.glob("*_pb2*"))
    assert generated == checked_in
    for name in generated:
        fresh = (tmp_path / "qpart" / "v1" / name).read_text()
        assert fresh == (PROTO_DIR / name).read_text(), f"{name} is stale: run `make protos`"


def test_every_field_and_message_is_documented():
    undocumented = []
    for proto in PROTO_DIR.glob("*.proto"):
        lines = proto.read_text().splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            declares = re.match(r"^(message|enum|service|rpc)\s", stripped) or re.match(
                r"^(optional |repeated )?[\w.]+\s+\w+\s*=\s*\d+;", stripped)
            if declares:
                previous = lines[i - 1].strip() if i else ""
                if not previous.startswith("//"):
                    undocumented.append(f"{proto.name}:{i + 1}: {stripped}")
    assert not undocumented, "undocumented declarations:\n" + "\n".join(undocumented)
