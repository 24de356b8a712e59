"""Bring your own model: import any nn.Module with its weights and data into the model repository.

    import_model(root, "mynet", module, data_spec="images/", preprocessing=Preprocessing(channels=3, resize=(96, 96)))

The module's real forward is traced (qpart.server.models.tracing), BatchNorm folded, and the result
run against the module on real inputs of the data: outputs that differ beyond float32 noise (or a
classifier whose top-1 differs on any input) refuse the import, naming the output and the gap. The
card records the data spec, the preprocessing, the validation split, the float accuracy on the test
split and the range of every tensor on the validation split (the activation quantizers).
"""
import importlib
import importlib.util
import pathlib
import sys
import time

import numpy as np
import torch
from torch import nn

from qpart.common import network
from qpart.common.errors import FailedPrecondition, InvalidArgument, NotFound
from qpart.common.preprocess import Preprocessing
from qpart.common.torchnet import GraphModule
from qpart.server.models import datasets, evaluate, repository, tracing

CHECK_SAMPLES = 64          # real inputs the traced graph must reproduce
RTOL, ATOL = 1e-3, 1e-4     # |graph - module| <= ATOL * max|module| + RTOL * |module|, per output


class TraceMismatch(InvalidArgument):
    """The traced description computes something else than the module (control flow, state, randomness)."""


def load_factory(spec: str):
    """The callable named `pkg.module:factory` or `path/to/file.py:factory` (user code, run here)."""
    module_name, _, attr = spec.rpartition(":")
    if not module_name or not attr:
        raise InvalidArgument(f"--module {spec!r}: give MODULE:FACTORY, e.g. mypkg.nets:build or nets.py:build")
    try:
        if module_name.endswith(".py"):
            path = pathlib.Path(module_name)
            if not path.is_file():
                raise NotFound(f"--module: {path} does not exist")
            loaded = importlib.util.spec_from_file_location(path.stem, path)
            code = importlib.util.module_from_spec(loaded)
            sys.modules[path.stem] = code
            loaded.loader.exec_module(code)
        else:
            code = importlib.import_module(module_name)
    except ImportError as e:
        raise NotFound(f"--module {spec!r}: cannot import {module_name!r}: {e}") from None
    factory = getattr(code, attr, None)
    if not callable(factory):
        raise NotFound(f"--module {spec!r}: {module_name} has no callable {attr!r}")
    return factory


def load_weights(module: nn.Module, path: pathlib.Path) -> None:
    """Weights from safetensors, or a torch state dict read with weights_only=True (never a pickle of code)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # noqa: BLE001 - both loaders raise many kinds
        raise InvalidArgument(f"cannot read weights from {path}: {type(e).__name__}: {str(e)[:300]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidArgument(f"{path} is not a state dict of tensors")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise InvalidArgument(f"the weights in {path} do not fit the module: {str(e)[:500]}") from None


def check(module: nn.Module, spec, params: dict, x: np.ndarray, reference=None) -> dict:
    """Run the description and the module (or `reference`: inputs -> list of outputs, e.g. onnxruntime running
    the original file) on the same real inputs; raise TraceMismatch if they differ."""
    graph = GraphModule(spec, network.analyze(spec), params)
    with torch.no_grad():
        inputs = torch.from_numpy(np.ascontiguousarray(x))
        expected = module.eval()(inputs) if reference is None else [torch.from_numpy(np.asarray(e, np.float32))
                                                                     for e in reference(x)]
        got = graph(inputs)
    expected = expected if isinstance(expected, (tuple, list)) else (expected,)
    worst = 0.0
    for i, (e, g) in enumerate(zip(expected, got)):
        gap = float((e - g).abs().max())
        bound = ATOL * float(e.abs().max()) + RTOL * float(e.abs().max())
        agree = float((e.argmax(-1) == g.argmax(-1)).float().mean()) if e.dim() == 2 else 1.0
        if tuple(e.shape) != tuple(g.shape) or gap > bound or agree < 1.0:
            raise TraceMismatch(f"the traced graph disagrees with the {'module' if reference is None else 'original'} "
                                f"on output {i} ({spec.outputs[i]!r}): "
                                f"max difference {gap:.3g} (allowed {bound:.3g}), top-1 agreement {100 * agree:.1f} % "
                                f"on {len(x)} inputs; forward may depend on state, randomness or Python control flow")
        worst = max(worst, gap)
    return {"samples": len(x), "max_difference": worst}


def trace_and_check(module: nn.Module, sample: np.ndarray, reference=None) -> tuple:
    """(spec, params, check figures) of a module, traced on the first two inputs and checked on all (against
    `reference` where given)."""
    spec, params = tracing.trace(module, torch.from_numpy(np.ascontiguousarray(sample[:2])))
    return spec, params, check(module, spec, params, sample, reference)


def import_model(root: pathlib.Path, name: str, module: nn.Module, data_spec: str = "fashion-mnist",
                 preprocessing: Preprocessing = Preprocessing(), description: str = "", validation_size: int = 10000,
                 seed: int = 0, card_extra: dict | None = None, progress=print, reference=None,
                 test_limit: int = 0) -> repository.Model:
    """Trace, check and store `module` under root/name with its card (accuracy, splits, tensor ranges).
    reference: what the description must reproduce where it is not the module itself (inputs -> outputs);
    test_limit: the float test accuracy on the first this many test images (0: all; the card says how many)."""
    started = time.perf_counter()
    src = datasets.source({"data": data_spec})
    train_images, _ = src.part("train")
    validation_size = min(validation_size, len(train_images) // 2)
    card = {"name": name, "description": description or f"{type(module).__name__} imported by qpart",
            "task": "classification", "dataset": src.name, "data": src.spec, "class_names": src.classes,
            "preprocessing": preprocessing.to_dict(), "validation": {"seed": seed, "size": validation_size},
            "image_shape": [int(d) for d in train_images.shape[1:]]}    # one raw image, as the device gets it
    val_images, val_y = datasets.split(card, "validation")
    spec, params, checked = trace_and_check(module, preprocessing.apply(val_images[:CHECK_SAMPLES]), reference)
    progress(f"{name}: traced {len(spec.nodes)} nodes, matches the {'module' if reference is None else 'original'} "
             f"on {checked['samples']} inputs (max difference {checked['max_difference']:.2g})")
    graph = GraphModule(spec, network.analyze(spec), params)
    test_images, test_y = datasets.split(card, "test")
    if test_limit:
        test_images, test_y = test_images[:test_limit], test_y[:test_limit]
    test_logits = evaluate.logits(graph, datasets.inputs(test_images, preprocessing))
    if test_logits.ndim != 2:
        card["task"] = ""
    validation_logits = []                    # the ranges' float pass gives the validation logits too
    ranges = evaluate.tensor_ranges(spec, params, datasets.inputs(val_images, preprocessing), validation_logits)
    card |= {"float_test_accuracy": round(evaluate.accuracy(test_logits.argmax(1), test_y), 2),
             "test_samples": int(len(test_y)),
             "float_validation_accuracy": round(evaluate.accuracy(
                 np.concatenate(validation_logits).argmax(1), val_y), 2),
             "tensor_ranges": ranges,
             "check": checked,
             "import_seconds": round(time.perf_counter() - started, 1)} | (card_extra or {})
    return repository.save_model(root, name, spec, params, card)


def require_classifier(model: repository.Model) -> None:
    if model.card.get("task") != "classification":
        raise FailedPrecondition(f"model {model.name!r} is not a classifier; accuracy budgets need class scores")
