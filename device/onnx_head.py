"""The head on onnxruntime: its nodes as an in-memory ONNX graph (opset 17), the weights dequantized once into
float32 initializers, run by onnxruntime's CPU execution provider (its ARM and x86 kernels; on a Pi or a
Jetson's CPU far ahead of im2col in numpy).

Image models' heads only: a language model's head (token embeddings, attention over a KV cache) is refused by
name, and so is any op this mapping does not know. Needs the `onnxruntime` extra (onnx builds the graph,
onnxruntime runs it): `pip install 'qpart[device,onnxruntime]'`.
"""
import math

import numpy as np

from qpart.common import sequence
from qpart.common.errors import FailedPrecondition
from qpart.common.names import shown
from qpart.common.network import ACTIVATIONS, NetworkProfile, op_of
from qpart.common.tensors import CompactTensor
from qpart.v1 import network_pb2 as pb

OPSET = 17             # onnxruntime 1.17 (the extra's floor) runs it; HardSwish needs 14
IR_VERSION = 8         # the oldest IR opset 17 allows: what every onnxruntime of the extra reads


class OnnxBackend:
    name = "onnxruntime"

    def __init__(self, spec: pb.NetworkSpec, profile: NetworkProfile, params: dict[str, dict[str, CompactTensor]]):
        if profile.sequence is not None:
            raise FailedPrecondition("the onnxruntime backend runs image models' heads; a language model's head "
                                     "(attention over a KV cache) runs on the numpy or torch backend")
        import onnxruntime
        self._ort, self._options = onnxruntime, onnxruntime.SessionOptions()
        self._options.log_severity_level = 3             # notes on unused initializers are not errors
        self.inputs, self.outputs = (spec.input,), tuple(spec.outputs)
        self._spec, self._profile, self._params = spec, profile, params
        self.session, self.weight_bytes = self._session(self.outputs)
        self._every = None

    def _session(self, outputs):
        graph = _Graph(self._profile)
        for node in self._spec.nodes:
            graph.add(node, {name: t.float() for name, t in self._params.get(node.name, {}).items()})
        model = graph.model(self.inputs[0], outputs).SerializeToString()
        session = self._ort.InferenceSession(model, self._options, providers=["CPUExecutionProvider"])
        return session, sum(a.nbytes for a in graph.arrays)

    def run(self, x: np.ndarray, cache=None) -> list[np.ndarray]:
        if cache is not None:
            raise FailedPrecondition("the onnxruntime backend runs no language model's head")
        return self.session.run(None, {self.inputs[0]: np.ascontiguousarray(x, np.float32)})

    def tensors(self, x: np.ndarray, cache=None) -> dict[str, np.ndarray]:
        """Every tensor of a run by name (a second session, built at the first call, outputs each node)."""
        if cache is not None:
            raise FailedPrecondition("the onnxruntime backend runs no language model's head")
        names = [node.name for node in self._spec.nodes]
        if self._every is None:
            self._every = self._session(names)[0]
        x = np.ascontiguousarray(x, np.float32)
        return {self.inputs[0]: x, **dict(zip(names, self._every.run(None, {self.inputs[0]: x})))}


class _Graph:
    """ONNX nodes and initializers for a head's nodes; each node's output keeps the node's name."""

    def __init__(self, profile: NetworkProfile):
        from onnx import helper, numpy_helper
        self.helper, self.numpy_helper, self.profile = helper, numpy_helper, profile
        self.nodes, self.initializers, self.arrays = [], [], []

    def const(self, value, owner: str, what: str, dtype=np.float32) -> str:
        name = f"{owner}/{what}"
        array = np.ascontiguousarray(value, dtype)
        self.arrays.append(array)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, **attributes) -> str:
        self.nodes.append(self.helper.make_node(op_type, inputs, [output], **attributes))
        return output

    def model(self, input_name: str, outputs):
        from onnx import TensorProto
        h, nodes, out_names = self.helper, list(self.nodes), []
        for name in outputs:             # a graph output may not be its input: pass that one through
            out_names.append(f"{name}/out" if name == input_name else name)
            if name == input_name:
                nodes.append(h.make_node("Identity", [name], [out_names[-1]]))
        graph = h.make_graph(
            nodes, "qpart-head",
            [h.make_tensor_value_info(input_name, TensorProto.FLOAT, ["n", *self.profile.input_shape])],
            [h.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in out_names], self.initializers)
        return h.make_model(graph, opset_imports=[h.make_opsetid("", OPSET)], ir_version=IR_VERSION,
                            producer_name="qpart")

    def add(self, node: pb.Node, params: dict[str, np.ndarray]) -> None:
        op, name, args = op_of(node), node.name, list(node.inputs)
        if op in sequence.OPS:
            raise FailedPrecondition(f"node {shown(name)}: the onnxruntime backend does not run {op} (a language "
                                     f"model's op); run this head on numpy or torch")
        if op == "conv2d":
            c = node.conv2d
            weights = [self.const(params["weight"], name, "weight")] + (
                [self.const(params["bias"], name, "bias")] if "bias" in params else [])
            self.op("Conv", [args[0], *weights], name, kernel_shape=[c.kernel_h, c.kernel_w],
                    strides=[c.stride_h, c.stride_w], pads=[c.padding_h, c.padding_w, c.padding_h, c.padding_w],
                    dilations=[c.dilation_h, c.dilation_w], group=c.groups)
        elif op == "linear":
            self.linear(name, args[0], params)
        elif op == "activation":
            self.activation(name, args[0], ACTIVATIONS[node.activation.function])
        elif op in ("add", "mul"):
            self.op("Add" if op == "add" else "Mul", args[:2], name)
        elif op == "concat":
            self.op("Concat", args, name, axis=node.concat.axis + 1)
        elif op in ("max_pool2d", "avg_pool2d"):
            p = getattr(node, op)
            pool = dict(kernel_shape=[p.kernel_h, p.kernel_w], strides=[p.stride_h, p.stride_w],
                        pads=[p.padding_h, p.padding_w, p.padding_h, p.padding_w])
            if op == "max_pool2d":
                self.op("MaxPool", [args[0]], name, **pool)
            else:
                self.op("AveragePool", [args[0]], name, count_include_pad=1, **pool)
        elif op == "adaptive_avg_pool2d":
            self.adaptive_avg_pool(name, args[0], node.adaptive_avg_pool2d)
        elif op == "flatten":
            self.op("Flatten", [args[0]], name, axis=1)
        elif op == "reshape":
            shape = self.const([-1, *[int(d) for d in node.reshape.shape]], name, "shape", np.int64)
            self.op("Reshape", [args[0], shape], name)
        elif op == "permute":
            self.op("Transpose", [args[0]], name, perm=[0, *[int(d) + 1 for d in node.permute.dims]])
        elif op == "slice":
            s = node.slice
            self.op("Slice", [args[0], self.const([s.start], name, "starts", np.int64),
                              self.const([s.stop], name, "ends", np.int64),
                              self.const([s.axis + 1], name, "axes", np.int64)], name)
        elif op == "batch_norm":
            view = (-1,) + (1,) * (len(self.profile.shapes[args[0]]) - 1)          # [C, 1, 1] against [n, C, H, W]
            scaled = self.op("Mul", [args[0], self.const(params["scale"].reshape(view), name, "scale")],
                             f"{name}/scaled")
            self.op("Add", [scaled, self.const(params["shift"].reshape(view), name, "shift")], name)
        elif op == "identity":
            self.op("Identity", [args[0]], name)
        else:
            raise FailedPrecondition(f"node {shown(name)}: the onnxruntime backend does not run {op}")

    def linear(self, name: str, x: str, params: dict) -> None:
        bias = [self.const(params["bias"], name, "bias")] if "bias" in params else []
        if len(self.profile.shapes[x]) == 1:                       # [n, in]: one Gemm
            self.op("Gemm", [x, self.const(params["weight"], name, "weight"), *bias], name, transB=1)
            return
        product = self.op("MatMul", [x, self.const(params["weight"].T, name, "weight_t")],
                          f"{name}/product" if bias else name)
        if bias:
            self.op("Add", [product, bias[0]], name)

    def activation(self, name: str, x: str, function: str) -> None:
        def scalar(value, what):
            return self.const(np.float32(value), name, what)
        if function in ("relu", "sigmoid"):
            self.op(function.capitalize(), [x], name)
        elif function == "relu6":
            self.op("Clip", [x, scalar(0.0, "low"), scalar(6.0, "high")], name)
        elif function == "hardswish":
            self.op("HardSwish", [x], name)
        elif function == "hardsigmoid":
            self.op("HardSigmoid", [x], name, alpha=1.0 / 6.0, beta=0.5)
        elif function == "silu":
            self.op("Mul", [x, self.op("Sigmoid", [x], f"{name}/sigmoid")], name)
        elif function == "gelu":                                   # x * (erf(x / sqrt 2) + 1) / 2
            erf = self.op("Erf", [self.op("Mul", [x, scalar(math.sqrt(0.5), "rsqrt2")], f"{name}/scaled")],
                          f"{name}/erf")
            half = self.op("Mul", [self.op("Add", [erf, scalar(1.0, "one")], f"{name}/cdf2"), scalar(0.5, "half")],
                           f"{name}/cdf")
            self.op("Mul", [x, half], name)
        elif function == "gelu_tanh":                              # x * (tanh(c (x + 0.044715 x^3)) + 1) / 2
            cube = self.op("Mul", [self.op("Mul", [x, x], f"{name}/square"), x], f"{name}/cube")
            inner = self.op("Add", [x, self.op("Mul", [cube, scalar(0.044715, "k")], f"{name}/kcube")],
                            f"{name}/inner")
            tanh = self.op("Tanh", [self.op("Mul", [inner, scalar(math.sqrt(2 / math.pi), "c")], f"{name}/arg")],
                           f"{name}/tanh")
            half = self.op("Mul", [self.op("Add", [tanh, scalar(1.0, "one")], f"{name}/cdf2"), scalar(0.5, "half")],
                           f"{name}/cdf")
            self.op("Mul", [x, half], name)
        else:
            raise FailedPrecondition(f"node {shown(name)}: the onnxruntime backend does not run activation {function}")

    def adaptive_avg_pool(self, name: str, x: str, p: pb.AdaptiveAvgPool2dOp) -> None:
        _, h, w = self.profile.shapes[x]
        if (p.out_h, p.out_w) == (1, 1):
            self.op("GlobalAveragePool", [x], name)
        elif h % p.out_h == 0 and w % p.out_w == 0:                 # equal cells: one strided average
            kh, kw = h // p.out_h, w // p.out_w
            self.op("AveragePool", [x], name, kernel_shape=[kh, kw], strides=[kh, kw])
        else:                                                      # cell (i, j) as npexec.adaptive_avg_pool2d
            rows = []
            for i in range(p.out_h):
                r0, r1 = (i * h) // p.out_h, -(-((i + 1) * h) // p.out_h)
                cells = []
                for j in range(p.out_w):
                    c0, c1 = (j * w) // p.out_w, -(-((j + 1) * w) // p.out_w)
                    part = self.op("Slice", [x, self.const([r0, c0], name, f"s{i}_{j}", np.int64),
                                             self.const([r1, c1], name, f"e{i}_{j}", np.int64),
                                             self.const([2, 3], name, f"a{i}_{j}", np.int64)], f"{name}/cell{i}_{j}")
                    cells.append(self.op("ReduceMean", [part], f"{name}/mean{i}_{j}", axes=[2, 3], keepdims=1))
                rows.append(self.op("Concat", cells, f"{name}/row{i}", axis=3))
            self.op("Concat", rows, name, axis=2)
