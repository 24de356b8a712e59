"""Device profiles as TOML files: the bundled ones by name, or any file by path.

Bundled: paper-table2 (the paper's Table II device), rpi4, rpi5, jetson-orin-nano. Each field is a
DeviceProfile field; each bundled file cites its sources in comments.
"""
import pathlib
from dataclasses import fields

from qpart.common.config import tomllib
from qpart.common.costmodel import DeviceProfile
from qpart.common.errors import InvalidArgument, NotFound

PROFILE_DIR = pathlib.Path(__file__).parent / "profiles"


def bundled() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_device(name_or_path: str) -> DeviceProfile:
    path = pathlib.Path(name_or_path)
    if not path.is_file():
        path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise NotFound(f"no device profile {name_or_path!r}: not a file, and not one of {', '.join(bundled())}")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgument(f"{path}: {e}") from None
    known = {f.name for f in fields(DeviceProfile)}
    unknown = set(values) - known
    if unknown:
        raise InvalidArgument(f"{path}: unknown field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(known))}")
    values.setdefault("name", path.stem)
    return DeviceProfile(**values)
