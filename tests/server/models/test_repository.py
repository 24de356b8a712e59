import json

import numpy as np
import pytest

from qpart.common.errors import InvalidArgument, NotFound
from qpart.server.models import export, repository
from qpart.server.training import zoo


def test_save_load_round_trip_and_version(tmp_path):
    spec, params = export.export(zoo.fc6().eval(), (1, 28, 28))
    card = {"cut_ranges": [[0.0, 1.0]] * 6, "float_test_accuracy": 50.0}
    model = repository.save_model(tmp_path, "m1", spec, params, card)
    again = repository.load_model(tmp_path / "m1")
    assert again.version == model.version and again.spec == spec
    assert all(np.array_equal(again.params[k], params[k]) for k in params)
    params["1.bias"] = params["1.bias"] + 1
    assert repository.save_model(tmp_path, "m1", spec, params, card).version != model.version
    # the weights file is safetensors: a JSON header, never a pickle
    raw = (tmp_path / "m1" / repository.WEIGHTS_FILE).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert "1.weight" in json.loads(raw[8:8 + header_len])


def test_repository_lookup(tmp_path):
    spec, params = export.export(zoo.lenet().eval(), (1, 28, 28))
    repository.save_model(tmp_path, "lenet", spec, params, {"cut_ranges": []})
    repo = repository.ModelRepository(tmp_path)
    assert repo.names() == ["lenet"]
    with pytest.raises(NotFound, match="unknown model 'nope'; this server has: lenet"):
        repo.get("nope")
    with pytest.raises(NotFound, match="does not exist"):
        repository.ModelRepository(tmp_path / "missing")
    for bad in ("", "../x", "a b", "x" * 65):
        with pytest.raises(InvalidArgument):
            repository.check_name(bad)
