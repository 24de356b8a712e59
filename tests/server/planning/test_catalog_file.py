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


def test_a_format_4_catalog_is_upgraded_to_coded_heads_with_its_certification_kept(lenet):
    from qpart.server.models.heads import build_head, serialize
    value = json.loads(lenet.catalog_path.read_text())
    shipped = [e for e in value["entries"] if e["head_bytes"]]
    for entry in shipped:                       # as format 4 wrote them: dense heads
        dense = serialize(build_head(lenet, catalog.Entry.from_json(entry).split, coded=False))
        entry["head_bytes"], entry["head_hash"] = dense.size, dense.content_hash
    lenet.catalog_path.write_text(json.dumps({**value, "format_version": catalog.UPGRADABLE}))
    assert catalog.load(lenet) is None                                      # an old format is not trusted as is
    upgraded = catalog.current(lenet)
    assert upgraded.format_version == catalog.CATALOG_VERSION and catalog.load(lenet) is not None
    pairs = [(old, new) for old, new in zip(value["entries"], upgraded.entries) if old["head_bytes"]]
    assert len(pairs) == len(shipped) > 0
    for old, new in pairs:
        assert new.split == catalog.Entry.from_json(old).split and new.certified_drop == old["certified_drop"]
        built = serialize(build_head(lenet, new.split))
        assert (new.head_bytes, new.head_hash) == (built.size, built.content_hash) and new.head_bytes <= old["head_bytes"]
    assert sum(new.head_bytes for _, new in pairs) < sum(old["head_bytes"] for old, _ in pairs)   # float32 heads stay
    lenet.catalog_path.write_text(json.dumps({**value, "format_version": catalog.UPGRADABLE, "model_version": "0" * 16}))
    assert catalog.current(lenet) is None                                    # other weights: not upgraded
