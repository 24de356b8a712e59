"""A served model made for planner tests: a small convolutional net with random weights (nothing trained) and
a hand-written catalog whose certified drops the tests choose, with the real sizes of its heads."""
import pathlib

import numpy as np

from qpart.common import network
from qpart.server.models.heads import build_head, serialize
from qpart.server.models.repository import Model
from qpart.server.models.split import Split, uniform
from qpart.server.planning.catalog import Catalog, Entry
from qpart.server.planning.patterns import CodecCosts, ModelSpeed, catalog_patterns
from qpart.server.planning.served import ServedModel
from qpart.v1 import network_pb2 as pb

NAME = "synth"
MID = 4          # the cut after c2's ReLU: [8, 6, 6] crosses (288 elements), two weight nodes on the device


def spec() -> pb.NetworkSpec:
    """[1, 12, 12] -> conv 3x3 4 -> ReLU -> conv 3x3/2 8 -> ReLU -> flatten -> linear 10."""
    s = pb.NetworkSpec(format_version=network.FORMAT_VERSION, input_shape=[1, 12, 12], input="x", outputs=["fc"])
    conv = dict(kernel_h=3, kernel_w=3, padding_h=1, padding_w=1, dilation_h=1, dilation_w=1, groups=1, bias=True)
    s.nodes.add(name="c1", inputs=["x"], conv2d=pb.Conv2dOp(in_channels=1, out_channels=4, stride_h=1, stride_w=1, **conv))
    s.nodes.add(name="r1", inputs=["c1"], activation=pb.ActivationOp(function=pb.RELU))
    s.nodes.add(name="c2", inputs=["r1"], conv2d=pb.Conv2dOp(in_channels=4, out_channels=8, stride_h=2, stride_w=2, **conv))
    s.nodes.add(name="r2", inputs=["c2"], activation=pb.ActivationOp(function=pb.RELU))
    s.nodes.add(name="f", inputs=["r2"], flatten=pb.FlattenOp())
    s.nodes.add(name="fc", inputs=["f"], linear=pb.LinearOp(in_features=8 * 6 * 6, out_features=10, bias=True))
    return s


def model(directory: pathlib.Path = pathlib.Path("/nonexistent/synth"), zeros: float = 0.0) -> Model:
    """zeros: the share of weights set to 0 (coders shrink such heads; random weights they do not)."""
    description = spec()
    profile = network.analyze(description)
    rng = np.random.default_rng(0)
    params = {network.parameter_name(n.name, p): rng.normal(0, 0.3, shape) * (rng.random(shape) >= zeros)
              for n in profile.nodes for p, shape in n.param_shapes.items()}
    ranges = {"x": [0.0, 1.0]} | {n.name: [-4.0, 4.0] if n.op != "activation" else [0.0, 4.0] for n in profile.nodes}
    card = {"task": "classification", "tensor_ranges": ranges, "class_names": [str(i) for i in range(10)]}
    return Model(NAME, directory, description, params, card, "0123456789abcdef")


def entry(m: Model, kind: str, split: Split, drop: float, budget: float | None = None) -> Entry:
    built = serialize(build_head(m, split)) if split.ships_head else None
    return Entry(kind, split, budget, drop, built.size if built else 0, built.content_hash if built else "")


def catalog(m: Model, mid_drops: tuple[float, float] = (0.3, 0.9)) -> Catalog:
    """Per cut 0, MID and the end: the float32 and uniform 8-bit splits; at MID two mixed-precision splits
    certified at mid_drops (6/5 bits, and 3/2 bits); at the end a 4-bit one certified at 0.6 points."""
    n = m.num_nodes
    entries = []
    for cut in (0, MID, n):
        entries += [entry(m, "float", uniform(m.profile, cut, 32), 0.0),
                    entry(m, "uniform8", uniform(m.profile, cut, 8), 0.05)]
    entries += [entry(m, "qpart", Split(MID, (6, 5), (6,)), mid_drops[0], 0.5),
                entry(m, "qpart", Split(MID, (3, 2), (2,)), mid_drops[1], 1.0),
                entry(m, "qpart", Split(n, (4, 4, 4), ()), 0.6, 1.0)]
    return Catalog(NAME, m.version, [0.5, 1.0], entries, cuts=[0, MID, n])


def served(m: Model | None = None, speed: ModelSpeed | None = None, codec: CodecCosts | None = None,
           **catalog_kw) -> ServedModel:
    m = m or model()
    c = catalog(m, **catalog_kw)
    return ServedModel(m, c, *catalog_patterns(m, c, codec=codec, speed=speed), speed=speed, codec=codec)
