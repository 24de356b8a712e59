"""ONNX models in: files the test exports from PyTorch models of its own (residual, depthwise with a
view(size(0), -1), squeeze-excitation), and one built node by node with onnx.helper, imported with
`qpart import --onnx` / import_onnx on data the test writes; the split at 16 bits matches onnxruntime running the
original file at every cut; unsupported ops and old opsets are refused by name."""
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

onnx = pytest.importorskip("onnx", reason="the onnx extra (qpart[onnx]) is part of the dev install")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from qpart.common import data  # noqa: E402
from qpart.common.errors import InvalidArgument  # noqa: E402
from qpart.common.preprocess import Preprocessing  # noqa: E402
from qpart.server.calibration.accuracy import Evaluator  # noqa: E402
from qpart.server.models import datasets, onnx_import  # noqa: E402
from qpart.server.models.repository import ModelRepository  # noqa: E402
from qpart.server.models.split import uniform  # noqa: E402
from qpart.server.models.tracing import UnsupportedOp  # noqa: E402

TRAIN, TEST = 2000, 2000
TIE = 1e-4          # a top-1 lead below this share of the logits' range is a tie at 16 bits


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.a = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                               nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8))
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(8 * 14 * 14, 10)

    def forward(self, x):
        x = self.stem(x)
        x = F.relu(x + self.a(x))
        return self.fc(torch.flatten(self.pool(x), 1))


class Depthwise(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU6(),
                                  nn.Conv2d(8, 8, 3, padding=1, groups=8), nn.BatchNorm2d(8), nn.ReLU6(),
                                  nn.Conv2d(8, 16, 1), nn.AvgPool2d(2))
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        x = self.body(x)
        return self.fc(x.view(x.size(0), -1))


class SqueezeExcite(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.BatchNorm2d(16), nn.Hardswish())
        self.squeeze, self.excite = nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(16, 10))

    def forward(self, x):
        x = self.stem(x)
        s = F.hardsigmoid(self.excite(F.relu(self.squeeze(x.mean((2, 3), keepdim=True)))))
        return self.fc(x * s)


@pytest.fixture(scope="module")
def npz(tmp_path_factory, data_dir):
    """The user's data as a .npz of uint8 images (a Fashion-MNIST subset the test writes)."""
    x, y = data.load_split("train", data_dir)
    xt, yt = data.load_split("test", data_dir)
    path = tmp_path_factory.mktemp("onnx-data") / "data.npz"
    np.savez(path, x=x[:TRAIN], y=y[:TRAIN], x_test=xt[:TEST], y_test=yt[:TEST])
    return path


def exported(module: nn.Module, npz, path, opset: int) -> None:
    """Train an epoch on the data, then export in eval mode with a dynamic batch."""
    torch.manual_seed(0)
    images, labels = datasets.source({"data": str(npz)}).part("train")
    x, y = torch.from_numpy(Preprocessing().apply(images)), torch.from_numpy(labels)
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    for start in range(0, len(y), 32):
        optimizer.zero_grad()
        F.cross_entropy(module(x[start:start + 32]), y[start:start + 32]).backward()
        optimizer.step()
    torch.onnx.export(module.eval(), (x[:1],), str(path), opset_version=opset, dynamo=False, input_names=["image"],
                      output_names=["logits"], dynamic_axes={"image": {0: "n"}, "logits": {0: "n"}},
                      do_constant_folding=False)


def agreement_at_every_cut(model, npz, path) -> dict:
    """{cut: share of decisive test images whose 16-bit split top-1 equals onnxruntime's on the file}."""
    images, _ = datasets.source({"data": str(npz)}).part("test")
    x = Preprocessing().apply(images)
    original = onnx_import.runtime(onnx_import.load(path))(x)[0]                # [n, 10]
    top2 = np.sort(original, axis=1)[:, -2:]
    decisive = top2[:, 1] - top2[:, 0] > TIE * float(original.max() - original.min())
    assert decisive.mean() >= 0.99
    evaluator = Evaluator(model, x, original.argmax(1))
    return {c.cut: float(np.mean((evaluator.logits(uniform(model.profile, c.cut, 16)).argmax(1).numpy()
                                  == original.argmax(1))[decisive])) for c in model.cuts()}


@pytest.mark.parametrize("net,opset", [(Residual, 13), (Depthwise, 17), (SqueezeExcite, 13)])
def test_an_exported_model_imports_and_its_splits_match_onnxruntime(net, opset, npz, tmp_path):
    path = tmp_path / f"{net.__name__.lower()}.onnx"
    exported(net(), npz, path, opset)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    model = onnx_import.import_onnx(tmp_path / "repo", net.__name__.lower(), path, str(npz), validation_size=500,
                                    progress=lambda *_: None)
    assert model.card["source"]["format"] == "onnx" and model.card["source"]["opset"] == opset
    assert model.card["check"]["max_difference"] < 1e-3
    if net is Depthwise:
        assert {"Shape", "Gather", "Reshape"} <= ops          # x.view(x.size(0), -1) as shape arithmetic
    if net is SqueezeExcite:
        assert {"ReduceMean", "HardSigmoid", "Mul"} <= ops
    agreement = agreement_at_every_cut(model, npz, path)
    assert len(agreement) >= 4
    low = {c: a for c, a in agreement.items() if a < 0.999}
    assert not low, f"split top-1 differs from onnxruntime's at cuts {low}"


def node_by_node(op: str = "Relu", opset: int = 13) -> onnx.ModelProto:
    """conv 3x3 (4 channels) -> op -> global average pool -> flatten -> gemm, weights seeded."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(0, 0.3, s).astype(np.float32), n) for n, s in
               (("w", (4, 1, 3, 3)), ("b", (4,)), ("fw", (10, 4)), ("fb", (10,)))]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node(op, ["c"], ["r"], name="act"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat"),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], name="fc", transB=1)]
    graph = helper.make_graph(nodes, "built", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_a_model_built_node_by_node_imports_through_the_cli(npz, tmp_path):
    path = tmp_path / "built.onnx"
    onnx.save(node_by_node(), str(path))
    done = subprocess.run([sys.executable, "-m", "qpart.cli.main", "import", "built", "--onnx", str(path),
                           "--data", str(npz), "--models", str(tmp_path / "repo"), "--validation-size", "500"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    model = ModelRepository(tmp_path / "repo").get("built")
    assert [n.WhichOneof("op") for n in model.spec.nodes][:2] == ["conv2d", "activation"]
    x = Preprocessing().apply(datasets.source({"data": str(npz)}).part("test")[0][:200])
    original = onnx_import.runtime(onnx.load(str(path)))(x)[0]
    got = Evaluator(model, x, None).float_logits.numpy()
    np.testing.assert_allclose(got, original, rtol=1e-4, atol=1e-5)


def test_an_unsupported_op_is_refused_by_op_type_and_node_name(npz, tmp_path):
    path = tmp_path / "leaky.onnx"
    onnx.save(node_by_node("LeakyRelu"), str(path))
    with pytest.raises(UnsupportedOp, match=r"ONNX op LeakyRelu \(node 'act'\) is not supported"):
        onnx_import.import_onnx(tmp_path / "repo", "leaky", path, str(npz), progress=lambda *_: None)
    assert not (tmp_path / "repo" / "leaky").exists()
    done = subprocess.run([sys.executable, "-m", "qpart.cli.main", "import", "leaky", "--onnx", str(path),
                           "--data", str(npz), "--models", str(tmp_path / "repo")], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode != 0 and "LeakyRelu" in done.stderr and "'act'" in done.stderr


def matmul_and_bias(read_twice: bool) -> onnx.ModelProto:
    """flatten -> MatMul by a constant -> Add of a constant bias (what exporters write for a Linear on [N, T, D]);
    read_twice: the product is also added to the biased sum, so its bias cannot be folded into it."""
    rng = np.random.default_rng(1)
    weights = [numpy_helper.from_array(rng.normal(0, 0.05, (784, 10)).astype(np.float32), "w"),
               numpy_helper.from_array(rng.normal(0, 0.5, (1, 10)).astype(np.float32), "b")]
    nodes = [helper.make_node("Flatten", ["x"], ["f"], name="flat"),
             helper.make_node("MatMul", ["f", "w"], ["m"], name="product"),
             helper.make_node("Add", ["m", "b"], ["y" if not read_twice else "a"], name="bias")]
    nodes += [helper.make_node("Add", ["a", "m"], ["y"], name="again")] if read_twice else []
    graph = helper.make_graph(nodes, "matmul", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1, 28, 28])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])


def test_a_matmul_takes_its_bias_only_where_nothing_else_reads_the_product(npz):
    x = Preprocessing().apply(datasets.source({"data": str(npz)}).part("test")[0][:50])
    model = matmul_and_bias(False)
    module = onnx_import.to_module(model, (1, 28, 28))
    np.testing.assert_allclose(module(torch.from_numpy(x)).detach().numpy(), onnx_import.runtime(model)(x)[0],
                               rtol=1e-4, atol=1e-5)
    with pytest.raises(UnsupportedOp, match=r"ONNX op Add \(node 'bias'\) takes 'b', a constant tensor"):
        onnx_import.to_module(matmul_and_bias(True), (1, 28, 28))


def test_old_opsets_and_broken_files_are_refused(tmp_path):
    old = tmp_path / "old.onnx"
    onnx.save(node_by_node(opset=11), str(old))
    with pytest.raises(InvalidArgument, match="opset 11; opset 13 or later"):
        onnx_import.load(old)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07not a model at all")
    with pytest.raises(InvalidArgument, match="not a valid ONNX model"):
        onnx_import.load(broken)
