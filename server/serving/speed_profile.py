"""The server's measured speed, as one object: kept in a file that replicas and restarts share.

A plan is priced with the server's own timings (qpart.server.serving.speed). Timed anew at every start,
the same request could get another plan after a restart; so the first start that times them on an
idle machine writes them to the speed profile file (by default `.qpart-speed.json` in the model
repository, or `--speed-profile FILE`), keyed by the machine they hold for (processor model, cores,
architecture, torch threads and version; not the host name, so that replicas on identical machines
share one entry). Later starts, and replicas that share the file, read that entry instead of timing:
the same request gets the same plan. The first writer wins: a replica that timed meanwhile adopts the
entry already written. A model or version the entry lacks is timed and added. Figures taken on a busy
machine are provisional: never written, and timed again once the machine is idle. `--remeasure-speed`
replaces the entry. Every value read is checked; a file that fails is reported and timed over.
"""
import copy
import fcntl
import json
import logging
import math
import os
import pathlib
import time
from dataclasses import dataclass, field

from qpart.common import timing
from qpart.common.timing import Timing

log = logging.getLogger("qpart.server.speed")
FORMAT = 1
FILE_NAME = ".qpart-speed.json"
MAX_FILE_BYTES = 16 << 20


@dataclass
class ModelTails:
    version: str                    # the model version the tails were timed for
    cuts: dict[int, Timing]         # cut -> the server's part for one input from it, seconds
    preprocess: Timing              # the model's preprocessing of one raw image, seconds (the device's work)
    prefill: dict[int, Timing] = field(default_factory=dict)   # a language model's: cut -> the tail over a prompt
                                                               # (cuts then holds one generated token's step)


@dataclass
class SpeedProfile:
    mac_rate: Timing                # MACs per second of a float32 linear layer (median 0: refused, not used)
    codec: dict[int, tuple]         # bits -> (encode s, encode s/element, decode s, decode s/element)
    zlib: tuple[float, float]       # seconds per packed byte to zlib-code, to inflate
    tails: dict[str, ModelTails]    # model name -> its tails
    busy: float | None              # other processes' CPU share while timing, 0-1 (None: unknown)
    measured_at: float              # unix seconds
    machine: dict                   # what the figures hold for (qpart.common.timing.machine, torch threads)
    warnings: list[str] = field(default_factory=list)   # figures refused or widely spread while timing
    source: str = "measured"        # "measured" at this start, or "profile file" (read from the shared file)

    @property
    def provisional(self) -> bool:
        """Taken while others kept the machine busy: not written, and timed again once it is idle."""
        return self.busy is not None and self.busy > timing.BUSY_THRESHOLD

    def tails_for(self, model) -> dict[int, Timing] | None:
        found = self.timed(model)
        return found.cuts if found is not None else None

    def timed(self, model) -> ModelTails | None:
        """What was timed for this model's current version, or None."""
        found = self.tails.get(model.name)
        return found if found is not None and found.version == model.version else None

    def copy(self) -> "SpeedProfile":
        return copy.deepcopy(self)

    def as_json(self) -> dict:
        return {"mac_rate": self.mac_rate.as_dict(), "codec": {str(b): list(v) for b, v in self.codec.items()},
                "zlib": list(self.zlib), "busy": self.busy, "measured_at": self.measured_at, "machine": self.machine,
                "warnings": self.warnings[:64],
                "tails": {name: {"version": t.version, "cuts": {str(c): v.as_dict() for c, v in t.cuts.items()},
                                 "preprocess": t.preprocess.as_dict(),
                                 "prefill": {str(c): v.as_dict() for c, v in t.prefill.items()}}
                          for name, t in self.tails.items()}}

    @classmethod
    def from_json(cls, d: dict, source: str) -> "SpeedProfile":
        """Checked: every figure a finite non-negative number, cuts and widths integers."""
        def seconds(values, n: int) -> tuple:
            out = tuple(float(v) for v in values)
            if len(out) != n or not all(math.isfinite(v) and 0 <= v < 3600 for v in out):
                raise ValueError(f"expected {n} finite non-negative seconds, got {values!r:.80}")
            return out
        codec = {int(b): seconds(v, 4) for b, v in dict(d["codec"]).items()}
        if not all(1 <= b <= 32 for b in codec):
            raise ValueError("codec widths must be 1 to 32 bits")
        tails = {str(name): ModelTails(str(t["version"]), {int(c): Timing.from_dict(v) for c, v in dict(t["cuts"]).items()},
                                       Timing.from_dict(t["preprocess"]),
                                       {int(c): Timing.from_dict(v) for c, v in dict(t.get("prefill", {})).items()})
                 for name, t in dict(d["tails"]).items()}
        busy = d.get("busy")
        return cls(Timing.from_dict(d["mac_rate"]), codec, seconds(d["zlib"], 2), tails,
                   None if busy is None else min(max(float(busy), 0.0), 1.0), float(d["measured_at"]),
                   dict(d["machine"]), [str(w)[:500] for w in d.get("warnings", [])][:64], source)


def machine_key(torch_threads: int, torch_version: str) -> str:
    return json.dumps(timing.machine() | {"torch_threads": torch_threads, "torch": torch_version}, sort_keys=True)


def _read_all(path: pathlib.Path) -> dict:
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError(f"larger than {MAX_FILE_BYTES} bytes")
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT or not isinstance(data.get("profiles"), dict):
            raise ValueError(f"not a format-{FORMAT} speed profile")
        return data["profiles"]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, AttributeError) as e:
        log.warning("speed profile %s cannot be read (%s): timing anew", path, e)
        return {}


def read(path: pathlib.Path, key: str) -> SpeedProfile | None:
    """The profile stored for this machine, or None (absent, another machine's only, or unreadable)."""
    entry = _read_all(path).get(key)
    if entry is None:
        return None
    try:
        return SpeedProfile.from_json(entry, "profile file")
    except (KeyError, TypeError, ValueError) as e:
        log.warning("speed profile %s: the entry for this machine is invalid (%s): timing anew", path, e)
        return None


def share(path: pathlib.Path, key: str, profile: SpeedProfile, replace: bool = False) -> SpeedProfile:
    """Store `profile` for this machine and return what the file now holds for it: an entry another process
    wrote first wins (its figures are returned, with models only `profile` has added), unless `replace`.
    A provisional profile is not written. Where the file cannot be written, `profile` itself is returned."""
    if profile.provisional:
        return profile
    try:
        with open(path.with_name(path.name + ".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            profiles = _read_all(path)
            stored = None if replace or key not in profiles else read(path, key)
            if stored is not None:
                for name, tails in profile.tails.items():
                    if stored.tails.get(name) is None or stored.tails[name].version != tails.version:
                        stored.tails[name] = tails
                profile = stored
            profiles[key] = profile.as_json()
            tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"format": FORMAT, "profiles": profiles}, indent=1))
            os.replace(tmp, path)
            profile.source = "profile file" if stored is not None else profile.source
    except OSError as e:
        log.warning("speed profile %s cannot be written (%s): these figures hold for this process only", path,
                    e.strerror or e)
    return profile


def describe(profile: SpeedProfile) -> str:
    busy = "unknown load" if profile.busy is None else f"others used {100 * profile.busy:.0f}% of the CPU"
    age = time.time() - profile.measured_at
    return (f"MAC rate {profile.mac_rate.describe(1e9, 'GMAC/s')}; timed {age:.0f} s ago ({busy}"
            f"{', provisional' if profile.provisional else ''}); from {profile.source}")
