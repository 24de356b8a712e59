"""Figures the catalog promises, measured: test-set drops, mixed precision against uniform widths."""
from dataclasses import dataclass

from qpart.common import quant
from qpart.server.calibration import text_samples
from qpart.server.calibration.accuracy import Evaluator, Measurement
from qpart.server.models import datasets
from qpart.server.models.heads import build_head, serialize
from qpart.server.models.repository import Model
from qpart.server.models.split import uniform
from qpart.server.planning import catalog as catalog_mod


TEXT_TEST_POSITIONS = 10000      # scored positions of a language model's test text (of about 124,000 in fortunes')


@dataclass
class TestRow:
    entry: catalog_mod.Entry
    test: Measurement


def test_evaluator(model: Model, data_dir=None, limit: int | None = None) -> Evaluator:
    """An evaluator on the model's test split, through its preprocessing (reporting only: the catalog never
    sees it); data_dir overrides where the card's data lies."""
    if model.profile.sequence is not None:           # a language model: scored positions of its test text
        x, targets = text_samples.test(model, limit or TEXT_TEST_POSITIONS)
        return Evaluator(model, x, None, targets=targets)
    return Evaluator(model, *datasets.model_split(model, "test", data_dir, limit))


def test_set_table(model: Model, catalog: catalog_mod.Catalog, evaluator: Evaluator) -> list[TestRow]:
    return [TestRow(e, evaluator.measure(e.split)) for e in catalog.entries]


@dataclass
class MixedPrecisionRow:
    budget: float
    qpart_bits: list[int]
    qpart_bytes: int          # head bytes of the QPART pattern
    qpart_drop: float         # its drop on the evaluator's data, points
    uniform_bits: int | None  # the narrowest uniform width whose drop is no larger (None: none is)
    uniform_bytes: int | None
    uniform_drop: float | None

    @property
    def saving(self) -> float | None:
        """Share of the uniform head's bytes QPART saves, at equal or better measured accuracy."""
        return 1.0 - self.qpart_bytes / self.uniform_bytes if self.uniform_bytes else None


def mixed_precision(model: Model, catalog: catalog_mod.Catalog, evaluator: Evaluator,
                    widths=range(2, 13)) -> list[MixedPrecisionRow]:
    """For the whole model on the device (p = L+1): each budget's QPART head against the narrowest
    uniform width (same quantizer and granularity) whose measured drop is no larger."""
    n = model.num_nodes
    granularity = catalog.config.get("granularity", quant.PER_CHANNEL)
    widths_at = {}
    for b in widths:
        split = uniform(model.profile, n, b, granularity)
        widths_at[b] = (evaluator.measure(split).drop, serialize(build_head(model, split)).size)
    rows = []
    for e in catalog.entries:
        if e.kind != "qpart" or e.split.cut != n:
            continue
        drop = evaluator.measure(e.split).drop
        fits = [b for b in widths if widths_at[b][0] <= drop + 1e-9]
        b = min(fits) if fits else None
        rows.append(MixedPrecisionRow(e.budget, list(e.split.weight_bits), e.head_bytes, drop, b,
                                      widths_at[b][1] if b else None, widths_at[b][0] if b else None))
    return rows
