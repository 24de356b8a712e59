"""`coding.json` beside a model's catalog: the zlib-coded size of each catalog split's activation message.

Written offline by `qpart catalog` (qpart.server.calibration.activation_coding measures it on validation data); read
here by the planner, which offers each listed split a second time with its activations zlib-coded and
prices that twin with these bytes. A missing file, or one measured for other weights, offers nothing coded.
"""
from dataclasses import dataclass, field

from qpart.server.models.repository import Model, corrupt, read_measurement, write_json
from qpart.server.models.split import Split

CODING_FILE = "coding.json"
CODING_VERSION = 1


@dataclass
class Coding:
    model_version: str        # the weights the sizes were measured with
    level: int                # the zlib level the device codes at
    images: int               # validation images measured per split
    sizes: dict = field(default_factory=dict)   # Split -> (raw bytes, zlib bytes): one input's message, means
    seconds: float = 0.0      # how long the measurement took

    def coded_bytes(self, split: Split) -> float | None:
        """Mean zlib-coded bytes per input of a split's message, when coding shrinks it; else None."""
        raw, coded = self.sizes.get(split, (0.0, 0.0))
        return coded if 0 < coded < raw else None

    def to_json(self) -> dict:
        return {"format_version": CODING_VERSION, "model_version": self.model_version, "level": self.level,
                "images": self.images, "seconds": self.seconds,
                "splits": [{"cut": s.cut, "weight_bits": list(s.weight_bits), "activation_bits": list(s.activation_bits),
                            "granularity": s.granularity, "raw_bytes": raw, "coded_bytes": coded}
                           for s, (raw, coded) in self.sizes.items()]}


def codable(model: Model, entry) -> bool:
    """Whether a catalog entry may be offered coded: a QPART split that sends something to a tail."""
    return entry.kind == "qpart" and model.profile.cut(entry.split.cut).runs_tail


def path(model: Model):
    return model.directory / CODING_FILE


def save(model: Model, coding: Coding) -> None:
    write_json(path(model), coding.to_json())


def load(model: Model) -> Coding | None:
    """The model's measured coded sizes, or None when missing, of another format or other weights."""
    value = read_measurement(path(model), model.name, CODING_VERSION, model.version)
    if value is None:
        return None
    try:
        sizes = {Split(int(s["cut"]), s["weight_bits"], s["activation_bits"], str(s["granularity"])):
                 (float(s["raw_bytes"]), float(s["coded_bytes"])) for s in value["splits"]}
        return Coding(value["model_version"], int(value["level"]), int(value["images"]), sizes,
                      float(value.get("seconds", 0.0)))
    except (TypeError, KeyError, ValueError) as e:
        raise corrupt(path(model), model.name, e) from None
