"""A language model's catalog: budgets in points of next-token agreement with the float model, certified on
scored positions of the validation text, checked on its test text; the input (token ids) never quantized."""
import numpy as np
import pytest

from qpart.server.calibration import text_samples
from qpart.server.models.repository import ModelRepository
from qpart.server.planning import catalog as catalog_mod
from qpart.testbed import catalog_report as reports


@pytest.fixture(scope="module")
def model(lm_models):
    return ModelRepository(lm_models).get("gpt-fortunes")


def test_positions_are_distinct_draws_inside_their_half(model):
    (sx, st), (cx, ct) = text_samples.validation(model, 500, 1500)
    tokens = text_samples.stream(model, "validation")
    half = len(tokens) // 2
    assert sx.shape == (500, text_samples.WINDOW) and cx.shape == (1500, text_samples.WINDOW)
    search = text_samples.positions(text_samples.WINDOW, half, 500)
    assert len(set(search.tolist())) == 500 and search.max() < half
    np.testing.assert_array_equal(sx[:, -1], tokens[search - 1])          # the window ends just before its target
    np.testing.assert_array_equal(st, tokens[search])
    certify = text_samples.positions(half + text_samples.WINDOW, len(tokens), 1500, text_samples.SEED + 1)
    assert certify.min() - text_samples.WINDOW >= half                     # windows of the two halves never overlap


def test_the_catalog_certifies_agreement_and_holds_on_the_test_text(model, lm_catalog):
    assert lm_catalog.metric == catalog_mod.AGREEMENT and lm_catalog.budgets == [0.5, 1.0, 2.0, 5.0]
    assert "next-token top-1 agreement" in lm_catalog.certification
    at_input = [e for e in lm_catalog.entries if e.split.cut == 0]
    assert [(e.kind, e.split.activation_bits) for e in at_input] == [("float", (32,))]   # ids travel as float32
    qpart = [e for e in lm_catalog.entries if e.kind == "qpart"]
    assert {e.split.cut for e in qpart} == {15, 28, 30}
    assert all(e.certified_drop <= e.budget and e.certification["perplexity"] > 1 for e in qpart)
    evaluator = reports.test_evaluator(model, limit=3000)
    assert float(evaluator.labels.float().mean()) >= 0                     # labels: the float model's own tokens
    assert evaluator.judge(evaluator.float_logits).drop == 0
    rows = reports.test_set_table(model, lm_catalog, evaluator)
    for row in rows:
        if row.entry.kind == "qpart":     # on 3,000 test positions (docs/ checks 10,000 against budget + 0.3)
            assert row.test.drop <= row.entry.budget + 1.0, (row.entry.split, row.test)
    narrow = min(qpart, key=lambda e: e.head_bytes)
    assert narrow.head_bytes < 0.3 * next(e.head_bytes for e in lm_catalog.entries
                                          if e.kind == "float" and e.split.cut == narrow.split.cut)
