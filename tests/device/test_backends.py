"""The numpy executor against the torch executor: the same top-1 through the server's tail at every cut
of every zoo model (16-bit weights). bench/device_executors.py does the same on 1,000 images of every
model and prints times and memory; here the costly models use fewer images to keep `make test` short."""
import numpy as np
import pytest
import torch

from qpart.device.head import HeadExecutor
from qpart.server.models.heads import build_head
from qpart.server.models.split import uniform
from tests.conftest import ZOO_NAMES

IMAGES = {"resnet8": 300, "mobilenetv2": 200, "resnet8-96": 200, "mobilenetv2-96": 100}


@pytest.mark.parametrize("name", ZOO_NAMES)
def test_numpy_and_torch_executors_agree_at_every_cut(name, repo, model_inputs):
    model = repo.get(name)
    x, _ = model_inputs(name, IMAGES.get(name, 1000))
    head = build_head(model, uniform(model.profile, model.num_nodes, 16))   # every cut's head is a prefix of it
    numpy_run = HeadExecutor(head, backend="numpy").backend.tensors(x)
    torch_run = HeadExecutor(head, backend="torch").backend.tensors(x)
    for cut in model.cuts():
        if not cut.runs_tail:
            top = [run[model.profile.outputs[0]].argmax(1) for run in (numpy_run, torch_run)]
        else:
            with torch.inference_mode():
                both = [torch.from_numpy(np.concatenate([numpy_run[t], torch_run[t]])) for t in cut.tensors]
                scores = model.tail(cut.cut)(*both)[0].numpy()
            top = [scores[:len(x)].argmax(1), scores[len(x):].argmax(1)]
        agreement = float(np.mean(top[0] == top[1]))
        assert agreement >= 0.999, (name, cut.cut, agreement)
