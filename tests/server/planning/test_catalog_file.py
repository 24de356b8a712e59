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


def test_a_catalog_certified_with_the_normal_bound_is_rebuilt_not_upgraded(lenet):
    """Formats up to 6 certified with the normal approximation (0 flips in 100 images: 0.00 points)."""
    value = json.loads(lenet.catalog_path.read_text())
    for old in (4, 5, 6):
        lenet.catalog_path.write_text(json.dumps({**value, "format_version": old}))
        assert catalog.upgrade(lenet) == 0 and catalog.current(lenet) is None


def test_a_format_4_catalog_is_upgraded_to_coded_heads_with_its_certification_kept(lenet, monkeypatch):
    from qpart.server.models.heads import build_head, serialize
    monkeypatch.setattr(catalog, "UPGRADABLE", (4, 5))    # the mechanism: since format 7 no older format qualifies
    value = json.loads(lenet.catalog_path.read_text())
    shipped = [e for e in value["entries"] if e["head_bytes"]]
    for entry in shipped:                       # as format 4 wrote them: dense heads
        dense = serialize(build_head(lenet, catalog.Entry.from_json(entry).split, coded=False))
        entry["head_bytes"], entry["head_hash"] = dense.size, dense.content_hash
    lenet.catalog_path.write_text(json.dumps({**value, "format_version": catalog.UPGRADABLE[0]}))
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
    lenet.catalog_path.write_text(json.dumps({**value, "format_version": catalog.UPGRADABLE[0], "model_version": "0" * 16}))
    assert catalog.current(lenet) is None                                    # other weights: not upgraded


def test_a_format_5_catalog_is_upgraded_to_heads_without_provenance(lenet, monkeypatch):
    """Format-5 heads carried each node's import source (a path on the building machine): their hashes change."""
    from qpart.server.models.heads import build_head, serialize
    from qpart.v1 import network_pb2 as pb
    monkeypatch.setattr(catalog, "UPGRADABLE", (4, 5))    # the mechanism: since format 7 no older format qualifies
    value = json.loads(lenet.catalog_path.read_text())
    for entry in value["entries"]:
        if entry["head_bytes"]:
            head = build_head(lenet, catalog.Entry.from_json(entry).split)
            for node in head.network.nodes:
                node.source = "module 'x' (traced node 'x', /a/long/checkout/server/models/importer.py:100)"
            old = serialize(head)
            entry["head_bytes"], entry["head_hash"] = old.size, old.content_hash
    lenet.catalog_path.write_text(json.dumps({**value, "format_version": 5}))
    assert catalog.upgrade(lenet) == 5
    for entry in catalog.load(lenet).entries:
        if entry.head_bytes:
            built = serialize(build_head(lenet, entry.split))
            assert entry.head_hash == built.content_hash
            head = pb.Head()
            head.ParseFromString(built.data)
            assert not any(node.source for node in head.network.nodes)
