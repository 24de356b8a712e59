"""Models no one here wrote (tests/server/models/layouts: torchvision's layouts, imported by name as a library's
model is): traced, checked against the module on real inputs, and split at every cut through both device
executors at 16 bits; or refused, naming the model's own module and line and no path of this machine."""
import pathlib

import numpy as np
import pytest
import torch

from qpart.common import quant
from qpart.device.head import HeadExecutor
from qpart.server.models import evaluate, importer, tracing
from qpart.server.models.heads import build_head
from qpart.server.models.repository import Model
from qpart.server.models.split import uniform
from tests.server.models.layouts import randomized
from tests.server.models.layouts import refused as refused_layouts

ROOT = pathlib.Path(__file__).resolve().parents[3]
LAYOUTS = "tests.server.models.layouts"


def line_of(module, marker: str) -> int:
    lines = pathlib.Path(module.__file__).read_text().splitlines()
    return next(i + 1 for i, line in enumerate(lines) if marker in line)


def split_outputs(model: Model, x: np.ndarray) -> dict[tuple[str, int], np.ndarray]:
    """{(executor, cut): the model's output} for every cut: the head (16-bit weights) run by the numpy or the
    torch executor, the crossing tensors quantized at 16 bits as Infer sends them, the server's float tail."""
    head = build_head(model, uniform(model.profile, model.num_nodes, 16))   # every cut's head is a prefix of it
    out = {}
    for backend in ("numpy", "torch"):
        run = HeadExecutor(head, backend=backend).backend.tensors(x)
        for c in range(model.num_nodes + 1):
            cut = model.profile.cut(c)
            if not cut.runs_tail:
                out[backend, c] = run[model.profile.outputs[0]]
                continue
            quantizers = model.cut_quantizers(uniform(model.profile, c, 16))
            sent = [quant.dequantize(quant.quantize_with(run[t], q), q) for t, q in zip(cut.tensors, quantizers)]
            with torch.inference_mode():
                out[backend, c] = model.tail(c)(*map(torch.from_numpy, sent))[0].numpy()
    return out


@pytest.mark.parametrize("name, shape, ops", [
    ("efficientnet", (3, 32, 32), {"conv2d", "activation", "mul", "add", "adaptive_avg_pool2d", "flatten", "linear"}),
    ("shufflenet", (3, 64, 64), {"conv2d", "activation", "max_pool2d", "slice", "concat", "reshape", "permute",
                                 "adaptive_avg_pool2d", "flatten", "linear"}),
])
def test_library_layouts_import_and_match_at_every_cut(name, shape, ops, tmp_path):
    torch.manual_seed(0)
    module = randomized(importer.load_factory(f"{LAYOUTS}.{name}:build")())
    x = np.random.default_rng(0).random((16, *shape), dtype=np.float32)
    spec, params, checked = importer.trace_and_check(module, x)        # the importer's check on all 16 inputs
    assert {n.WhichOneof("op") for n in spec.nodes} == ops               # every BatchNorm folded, no identity left
    assert all(n.source.startswith(("module", "function", "method")) and f"{LAYOUTS}.{name}:" in n.source
               and str(ROOT) not in n.source for n in spec.nodes), [n.source for n in spec.nodes]
    if name == "efficientnet":                   # stochastic depth (p = 0 and p > 0) and dropout: aliases
        assert sum(n.WhichOneof("op") == "add" for n in spec.nodes) == 3
    model = Model(name, tmp_path, spec, params, {"tensor_ranges": evaluate.tensor_ranges(spec, params, x)}, "test")
    with torch.no_grad():
        expected = module(torch.from_numpy(x)).numpy()
    outputs = split_outputs(model, x)
    assert len(outputs) == 2 * (model.num_nodes + 1)
    for (backend, cut), got in outputs.items():
        gap = float(np.abs(got - expected).max())
        assert gap <= 1e-3 * float(np.abs(expected).max()), (backend, cut, gap)
        assert np.array_equal(got.argmax(1), expected.argmax(1)), (backend, cut)


@pytest.mark.parametrize("factory, what, marker", [
    ("convnext", "parameter 'stem.1.weight' (traced node 'stem_1_weight', in module 'stem.1', ", "refused: weight"),
    ("vit", "parameter 'class_token' (traced node 'class_token', ", "refused: the class token"),
])
def test_library_refusals_name_the_models_module_and_line(factory, what, marker):
    module = importer.load_factory(f"{LAYOUTS}.refused:{factory}")()
    with pytest.raises(tracing.UnsupportedOp) as refusal:
        importer.trace_and_check(module, np.random.default_rng(0).random((4, 3, 32, 32), dtype=np.float32))
    message = str(refusal.value)
    place = f"{LAYOUTS}.refused:{line_of(refused_layouts, marker)} in forward)"
    assert message.startswith(what + place), message
    assert str(ROOT) not in message and "importer" not in message
