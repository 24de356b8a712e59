"""The catalog as stored beside a model (catalog.json): certified splits for the catalog's cuts.

`qpart catalog` builds it offline (qpart.server.calibration.build, paper Algorithm 1); the planner
reads it here. A catalog applies only to the weights it was built for: one built for another model
version, or in another format version, is ignored: `qpart catalog` builds it again. Formats up to 6
certified with the normal approximation of the drop bound, which is no bound on small certification
sets (0 flips in 100 images certified 0.00 points); format 7 certifies with an exact bound
(qpart.server.calibration.bounds), so older catalogs are rebuilt, not upgraded (`upgrade` converts only
the formats in UPGRADABLE: none today). A file that does not parse is an error that names the file and
the command that rebuilds it.
"""
import json
from dataclasses import asdict, dataclass, field

from qpart.common.errors import FailedPrecondition
from qpart.server.models.heads import build_head, serialize, store_heads
from qpart.server.models.repository import Model, write_json
from qpart.server.models.split import Split

CATALOG_VERSION = 7
# Formats that differ only in their heads' bytes, upgraded in place (same codes, same certification). Formats 4
# (every tensor dense) and 5 (every node carried its import provenance) were, until format 7 replaced the normal
# approximation of the certified bound by an exact bound: no older catalog keeps its certification now.
UPGRADABLE: tuple[int, ...] = ()
BUDGETS = (0.1, 0.25, 0.5, 1.0, 2.0)
TEXT_BUDGETS = (0.5, 1.0, 2.0, 5.0)
TOP1 = "top-1 accuracy"
AGREEMENT = "next-token top-1 agreement with the float model"
TEXT_CERTIFICATION = ("exact one-sided upper confidence bound (Berger-Boos) of the loss of next-token top-1 agreement "
                      "with the float model, one scored position per 64-token window of the validation text's second "
                      "half (positions drawn at random), disjoint from the search half, at 95% for each entry with "
                      "all its tries together (each of the 4 tries at 98.75%); the test text is never used")
CERTIFICATION = ("exact one-sided upper confidence bound (Berger-Boos) of the paired top-1 drop (float vs pattern, "
                 "per-sample flips) on a certification split disjoint from the search split, at 95% for each entry "
                 "with all its tries together (each of the 4 tries at 98.75%); the test set is never used")


@dataclass
class Entry:
    kind: str                      # "qpart" (mixed precision), "uniform8" or "float"
    split: Split
    budget: float | None           # the budget a qpart entry was certified for
    certified_drop: float          # upper confidence bound of the drop on the certification split, points
    head_bytes: int                # serialized head (0 when nothing ships)
    head_hash: str                 # its SHA-256 ("" when nothing ships)
    search: dict | None = None     # Measurement on the search split
    certification: dict | None = None  # Measurement on the certification split
    predicted_drop: float | None = None  # the accuracy model's prediction, points

    @classmethod
    def from_json(cls, value: dict) -> "Entry":
        value = dict(value)
        value["split"] = Split(**value["split"])
        return cls(**value)


@dataclass
class Catalog:
    model: str
    model_version: str
    budgets: list[float]
    entries: list[Entry]
    cuts: list[int] = field(default_factory=list)   # the cuts it certified splits for
    certification: str = CERTIFICATION
    config: dict = field(default_factory=dict)
    accuracy_model: dict = field(default_factory=dict)
    build_seconds: float = 0.0
    evaluations: int = 0
    format_version: int = CATALOG_VERSION
    metric: str = TOP1                # what a budget's points are of (AGREEMENT for a language model)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict) -> "Catalog":
        value = dict(value)
        value["entries"] = [Entry.from_json(e) for e in value["entries"]]
        return cls(**value)


def _rebuild(model: Model) -> str:
    return f"rebuild it with `qpart catalog {model.name} --force`"


def load(model: Model) -> Catalog | None:
    """The model's catalog, or None when it is missing or was built for other weights or another format."""
    path = model.catalog_path
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FailedPrecondition(f"the catalog {path} cannot be read ({e}); {_rebuild(model)}") from None
    if not isinstance(value, dict) or value.get("format_version") != CATALOG_VERSION:
        return None
    try:
        catalog = Catalog.from_json(value)
    except (TypeError, KeyError, ValueError, AttributeError) as e:
        raise FailedPrecondition(f"the catalog {path} is corrupt ({type(e).__name__}: {e}); {_rebuild(model)}") from None
    return catalog if catalog.model_version == model.version else None


def upgrade(model: Model) -> int:
    """Upgrade a catalog of an UPGRADABLE format for the model's weights in place; True when it did. Its entries'
    head sizes and hashes become those of the heads built now (coded, without provenance). The splits and their
    certification stay: the device restores the very same codes. Returns the format it upgraded from (0: none)."""
    try:
        value = json.loads(model.catalog_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return 0                                  # missing or unreadable: load says which
    if not (isinstance(value, dict) and value.get("format_version") in UPGRADABLE
            and value.get("model_version") == model.version):
        return 0
    old = Catalog.from_json({**value, "format_version": CATALOG_VERSION})
    for entry in old.entries:
        if entry.split.ships_head:
            built = serialize(build_head(model, entry.split))
            entry.head_bytes, entry.head_hash = built.size, built.content_hash
    save(model, old)
    return value["format_version"]


def current(model: Model) -> Catalog | None:
    """load, after upgrading a catalog of an older format in place; stores its heads (`heads/`) where missing."""
    upgrade(model)
    catalog = load(model)
    if catalog is not None:
        store_heads(model, [(e.split, e.head_hash) for e in catalog.entries])
    return catalog


def save(model: Model, catalog: Catalog) -> None:
    """The catalog, and its heads in `heads/` for the server to read instead of coding them at start-up."""
    write_json(model.catalog_path, catalog.to_json())
    store_heads(model, [(e.split, e.head_hash) for e in catalog.entries])


def require(model: Model) -> Catalog:
    catalog = load(model)
    if catalog is None:
        raise FailedPrecondition(f"model {model.name!r} has no catalog for its current weights; "
                                 f"build it with `qpart catalog {model.name}`")
    return catalog
