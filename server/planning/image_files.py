"""`codecs.json` beside a model's catalog: the input as image files (PNG, JPEG, WebP), certified offline.

Written by `qpart catalog` (qpart.server.calibration.image_files measures it on the certification half of the
validation split, like the catalog's splits); read here by the planner, which offers each setting as a
cut-0 candidate (policy qpart, and the server_only_codec baseline), priced with its measured bytes and
coding times, eligible within a budget by its certified drop. Missing, or measured for other weights:
no image candidates.
"""
from dataclasses import asdict, dataclass, field

from qpart.common import images
from qpart.server.models.repository import Model, corrupt, read_measurement, write_json

CODECS_FILE = "codecs.json"
CODECS_VERSION = 2          # 1 bounded the drop with the normal approximation (no bound on few images): measured again
SETTINGS = (("png", 0), ("jpeg", 50), ("jpeg", 75), ("jpeg", 90), ("jpeg", 95), ("webp", 50), ("webp", 75),
            ("webp", 90))     # what is measured by default: (coding name, quality)


@dataclass
class Setting:
    coding: str               # "png", "jpeg" or "webp"
    quality: int              # 1-100 for jpeg and webp, 0 for png
    bytes: float              # mean bytes of one input's message (its file and the 4-byte length)
    drop: float               # top-1 drop against the float model on the certification images, points
    drop_ucb: float           # its one-sided upper confidence bound, at the file's confidence per setting
    encode_s: float           # seconds to quantize and encode one input on its own, on the measuring machine (median)
    decode_s: float           # seconds to decode and dequantize one input on its own, there (median)

    @property
    def code(self) -> int:
        return images.BY_NAME[self.coding]


@dataclass
class Codecs:
    model_version: str        # the weights it was measured with
    samples: int              # certification images per setting
    confidence: float         # one-sided confidence of each drop_ucb (Bonferroni over the settings)
    mac_rate: float           # MACs per second of the measuring machine (to convert the times)
    settings: list[Setting] = field(default_factory=list)
    seconds: float = 0.0      # how long the measurement took

    def to_json(self) -> dict:
        return {"format_version": CODECS_VERSION, **asdict(self)}


def path(model: Model):
    return model.directory / CODECS_FILE


def save(model: Model, codecs: Codecs) -> None:
    write_json(path(model), codecs.to_json())


def load(model: Model) -> Codecs | None:
    """The model's certified image codings, or None when missing, of another format or other weights."""
    value = read_measurement(path(model), model.name, CODECS_VERSION, model.version)
    if value is None:
        return None
    try:
        value = {k: v for k, v in value.items() if k != "format_version"}
        codecs = Codecs(**{**value, "settings": [Setting(**s) for s in value["settings"]]})
        for s in codecs.settings:
            s.code                                            # raises KeyError on an unknown coding
        return codecs
    except (TypeError, KeyError, ValueError) as e:
        raise corrupt(path(model), model.name, e) from None
