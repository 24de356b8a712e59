"""A catalog file that cannot be read or does not hold a catalog is refused with FAILED_PRECONDITION naming
the file and the command that rebuilds it, never a TypeError that would turn every Plan into INTERNAL."""
import json
import shutil

import pytest

from qpart.common.errors import FailedPrecondition
from qpart.server.models.repository import ModelRepository
from qpart.server.planning import catalog


@pytest.fixture
def lenet(models_dir, catalogs, tmp_path):
    shutil.copytree(models_dir / "lenet", tmp_path / "lenet")
    return ModelRepository(tmp_path).get("lenet")


@pytest.mark.parametrize("text, message", [
    ("{not json", "cannot be read"),
    (json.dumps({"format_version": catalog.CATALOG_VERSION, "entries": 3}), "is corrupt"),
    (json.dumps({"format_version": catalog.CATALOG_VERSION, "entries": [{"kind": 1}]}), "is corrupt"),
])
def test_a_broken_catalog_names_the_file_and_the_fix(lenet, text, message):
    assert catalog.load(lenet) is not None
    lenet.catalog_path.write_text(text)
    with pytest.raises(FailedPrecondition, match=f"{message}.*qpart catalog lenet --force"):
        catalog.load(lenet)


def test_a_catalog_of_another_format_or_weights_is_ignored(lenet):
    value = json.loads(lenet.catalog_path.read_text())
    lenet.catalog_path.write_text(json.dumps({**value, "format_version": catalog.CATALOG_VERSION - 1}))
    assert catalog.load(lenet) is None
    lenet.catalog_path.write_text(json.dumps({**value, "model_version": "0" * 16}))
    assert catalog.load(lenet) is None
