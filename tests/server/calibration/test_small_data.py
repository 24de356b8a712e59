"""A catalog built on too few validation images leaves out, loudly, the budgets they cannot certify, and
refuses when they certify none (the user's `--validation-size 200`: 100 certification images)."""
import json
import logging
import shutil

import pytest

from qpart.common import images
from qpart.common.errors import FailedPrecondition
from qpart.server.calibration import build, image_files
from qpart.server.calibration.accuracy import paired_drop_bound
from qpart.server.models.repository import load_model

FAST = dict(budgets=(0.25, 1.0, 2.0), calibration_samples=200, search_samples=300, ladder=8)


@pytest.fixture
def two_cuts(monkeypatch):
    """The input and after the flatten only (no weights): what is checked does not depend on the cuts, the time does."""
    monkeypatch.setattr(build, "catalog_cuts", lambda model, prune=True: [0, 1])


def _fc6_validating_on(models_dir, tmp_path, size: int):
    """fc6 as trained, its card holding out `size` validation images (half of them certify)."""
    shutil.copytree(models_dir / "fc6", tmp_path / "fc6", ignore=shutil.ignore_patterns("heads", "*.json.tmp"))
    card_path = tmp_path / "fc6" / "card.json"
    card = json.loads(card_path.read_text())
    card_path.write_text(json.dumps({**card, "validation": {**card["validation"], "size": size}}))
    return load_model(tmp_path / "fc6")


def test_100_certification_images_certify_no_budget(models_dir, data_dir, tmp_path):
    model = _fc6_validating_on(models_dir, tmp_path, 200)
    with pytest.raises(FailedPrecondition, match=r"no accuracy budget.*100 certification images.*2 \(needs at least"):
        build.build(model, data_dir, build.CatalogConfig(**FAST), progress=False)


def test_a_budget_too_small_for_the_images_gets_no_entry_and_a_warning(models_dir, data_dir, tmp_path, caplog,
                                                                      two_cuts):
    model = _fc6_validating_on(models_dir, tmp_path, 1200)
    config = build.CatalogConfig(**FAST)
    level = build.certification_confidence(config)
    with caplog.at_level(logging.WARNING, logger="qpart.calibration"):
        built = build.build(model, data_dir, config, progress=False)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "600 certification images" in warned and "0.25 (needs at least 1,974)" in warned
    assert built.budgets == [1.0, 2.0] and list(built.config["budgets"]) == [0.25, 1.0, 2.0]
    assert "not certified" in built.certification and "0.25" in built.certification
    qpart = [e for e in built.entries if e.kind == "qpart"]
    assert built.cuts == [0, 1] and qpart and {e.budget for e in qpart} <= {1.0, 2.0}
    for e in built.entries:                     # every certified figure is the exact bound of its flips
        if e.certification is not None:
            c = e.certification
            assert c["samples"] == 600
            assert e.certified_drop == paired_drop_bound(c["flips_to_wrong"], c["flips_to_right"], 600, level)[1]
            assert e.budget is None or e.certified_drop <= e.budget
    if not images.available():
        return
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qpart.calibration"):
        found = image_files.measure(model, built, data_dir, settings=(("png", 0),))
    assert found.samples == 600 and found.confidence == pytest.approx(0.95)
    assert "no image setting" in caplog.text and "0.25 (needs at least" in caplog.text
    png = found.settings[0]
    assert png.drop_ucb >= 100 * (1 - 0.05 ** (1 / 600)) > 0.25 and png.drop_ucb >= png.drop
