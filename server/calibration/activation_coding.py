"""How small each catalog split's activation messages get zlib-coded, measured offline on validation data.

For every QPART catalog entry that sends something (the input, or tensors inside the network), the head
(with the entry's weight bits) runs on validation images of the certification half, each crossing tensor is
quantized and packed as the plan would send it, and each input's message is zlib-coded alone, at the
device's level (qpart.common.tensors.ZLIB_LEVEL). The mean coded bytes per input go to `coding.json`
beside the catalog (qpart.server.planning.activation_coding reads it); the planner then offers each such split twice,
raw and coded, and prices the coded one with these bytes and the zlib time measured on the server. The
data's compressibility is the data's: Fashion-MNIST resized to 96x96 is mostly black background and codes
to a tenth, a camera frame far less; measure on your own data (`qpart catalog NAME --data ...`).
"""
import time

import numpy as np
import torch

from qpart.common import network, tensors
from qpart.common.torchnet import GraphModule
from qpart.server.models import datasets
from qpart.server.models.heads import build_head
from qpart.server.models.repository import Model
from qpart.server.models.split import Split
from qpart.server.planning import catalog as catalog_mod
from qpart.server.planning import activation_coding

IMAGES = 256      # validation images each entry's messages are measured on


def head_outputs(model: Model, split: Split, x: np.ndarray) -> list[np.ndarray]:
    """The tensors crossing the split's cut for inputs x [n, *input_shape], as the device's head computes them."""
    if not split.ships_head:
        return [x]
    head = build_head(model, split)
    params = {p.name: torch.from_numpy(tensors.decode(p)) for p in head.parameters}
    module = GraphModule(head.network, network.analyze(head.network), params)
    with torch.inference_mode():
        return [y.numpy() for y in module(torch.from_numpy(np.ascontiguousarray(x, np.float32)))]


def message_sizes(model: Model, split: Split, x: np.ndarray) -> tuple[float, float]:
    """(raw, zlib-coded) bytes of one input's crossing tensors, the mean over the inputs of x."""
    params = model.cut_quantizers(split)
    outputs = head_outputs(model, split, x)
    raw = coded = 0
    for i in range(len(x)):
        for value, p in zip(outputs, params):
            packed = tensors.encode_batch(value[i:i + 1], p)
            raw += len(packed)
            coded += len(tensors.code(packed, tensors.ZLIB))
    return raw / len(x), coded / len(x)


def measure(model: Model, catalog: catalog_mod.Catalog, data_dir=None, images: int = IMAGES) -> activation_coding.Coding:
    started = time.perf_counter()
    pool, _ = datasets.split(model.card, "validation", data_dir)
    half = len(pool) // 2
    x = datasets.preprocessed(pool[half:half + images], model.preprocessing)
    sizes = {}
    for e in catalog.entries:
        if activation_coding.codable(model, e) and e.split not in sizes:
            sizes[e.split] = message_sizes(model, e.split, x)
    return activation_coding.Coding(model.version, tensors.ZLIB_LEVEL, len(x), sizes,
                             round(time.perf_counter() - started, 1))


def ensure(model: Model, catalog: catalog_mod.Catalog, data_dir=None) -> activation_coding.Coding:
    """The model's coding.json, measured and saved unless it is current for every QPART split that sends."""
    found = activation_coding.load(model)
    wanted = {e.split for e in catalog.entries if activation_coding.codable(model, e)}
    if found is None or not wanted <= set(found.sizes):
        found = measure(model, catalog, data_dir)
        activation_coding.save(model, found)
    return found
