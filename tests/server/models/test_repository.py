import json

import numpy as np
import pytest
import torch

from qpart.common.errors import FailedPrecondition, InvalidArgument, NotFound
from qpart.common.names import check_name
from qpart.server.models import repository, tracing
from qpart.server.training import zoo


def _traced(name):
    return tracing.trace(zoo.ZOO[name].build().eval(), torch.rand(2, 1, 28, 28))


def test_save_load_round_trip_and_version(tmp_path):
    spec, params = _traced("fc6")
    model = repository.save_model(tmp_path, "m1", spec, params, {"float_test_accuracy": 50.0})
    again = repository.load_model(tmp_path / "m1")
    assert again.version == model.version and again.spec == spec
    assert all(np.array_equal(again.params[k], params[k]) for k in params)
    key = next(k for k in params if k.endswith(".bias"))
    params[key] = params[key] + 1
    assert repository.save_model(tmp_path, "m1", spec, params, {}).version != model.version
    # the weights file is safetensors: a JSON header, never a pickle
    raw = (tmp_path / "m1" / repository.WEIGHTS_FILE).read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    assert key in json.loads(raw[8:8 + header_len])


def test_repository_lookup(tmp_path):
    spec, params = _traced("lenet")
    repository.save_model(tmp_path, "lenet", spec, params, {})
    repo = repository.ModelRepository(tmp_path)
    assert repo.names() == ["lenet"]
    with pytest.raises(NotFound, match="unknown model 'nope'; this server has: lenet"):
        repo.get("nope")
    with pytest.raises(NotFound, match=r"unknown model 'AAAA.*\.\.\. \(20480 characters\)"):
        repo.get("A" * 20480)        # peer-supplied text is echoed cut short
    with pytest.raises(NotFound, match="does not exist"):
        repository.ModelRepository(tmp_path / "missing")
    for bad in ("", "../x", "a b", "x" * 65):
        with pytest.raises(InvalidArgument):
            check_name(bad)


def test_broken_model_directories_are_refused_naming_the_file(tmp_path):
    spec, params = _traced("lenet")
    repository.save_model(tmp_path, "lenet", spec, params, {})
    network_file = tmp_path / "lenet" / repository.NETWORK_FILE
    text = network_file.read_text()
    network_file.write_text(text.replace('"formatVersion": 2', '"formatVersion": 1'))
    with pytest.raises(FailedPrecondition, match="version-1 description.*qpart train lenet"):
        repository.load_model(tmp_path / "lenet")
    network_file.write_text(text)
    (tmp_path / "lenet" / repository.WEIGHTS_FILE).write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(Exception, match="weights.safetensors"):
        repository.load_model(tmp_path / "lenet")
    extra = dict(params, **{"ghost.weight": np.zeros(3, np.float32)})
    with pytest.raises(InvalidArgument, match="'ghost.weight' belongs to no node"):
        repository.save_model(tmp_path, "lenet", spec, extra, {})
