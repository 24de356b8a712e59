"""ONNX models in: an ONNX graph (opset 13 and later) mapped node by node onto the torch modules and functions
the tracer knows (qpart.server.models.tracing), so an ONNX file takes the PyTorch path from there on: BatchNorm
folded, the description checked, and the import refused when the result disagrees with onnxruntime running the
original file on the user's data.

Direct mapping, not a converter such as onnx2torch: onnx2torch needs torchvision (whose wheel here is a CUDA
build that does not import against the pinned CPU torch) and maps nodes to module classes of its own that the
tracer would have to learn one by one; mapping onto nn.Conv2d, nn.BatchNorm2d, nn.Linear, pools and torch
functions reuses every rule the tracer already has, and an op outside the list is refused here, by its op type
and node name, before anything is built.

Initializers become weights; Constant nodes and shape arithmetic (Shape, Gather, Unsqueeze, Concat, ... on
constants) are folded here with the input's static per-sample shape, so `x.view(x.size(0), -1)` exported as
Shape -> Gather -> Unsqueeze -> Concat -> Reshape imports as a reshape that keeps the batch first.
"""
import hashlib
import pathlib

import numpy as np
from torch import fx

from qpart.common.errors import FailedPrecondition, InvalidArgument
from qpart.common.preprocess import Preprocessing
from qpart.server.models import datasets, importer
from qpart.server.models.onnx_ops import Converter
from qpart.server.models.tracing import UnsupportedOp

MIN_OPSET = 13
MAX_FILE_BYTES = 2 << 30           # the protobuf limit of one ONNX file (external data is refused)


def _onnx():
    try:
        import onnx
    except ImportError:
        raise FailedPrecondition("reading an ONNX model needs the onnx extra: pip install 'qpart[onnx]'") from None
    return onnx


def load(path: pathlib.Path):
    """The ONNX model in `path`, checked: a size within protobuf's, no external data, opset 13 or later of the
    default domain only, one input."""
    onnx = _onnx()
    if not path.is_file():
        raise InvalidArgument(f"--onnx {path}: no such file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InvalidArgument(f"--onnx {path}: {path.stat().st_size:,} bytes, more than one ONNX file can hold")
    try:
        model = onnx.load(str(path), load_external_data=False)
        onnx.checker.check_model(model)
    except Exception as e:   # noqa: BLE001 - onnx raises many kinds for a malformed file
        raise InvalidArgument(f"--onnx {path}: not a valid ONNX model: {type(e).__name__}: {str(e)[:300]}") from None
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
        raise InvalidArgument(f"--onnx {path}: weights in external files are not read; save them inside the model")
    opsets = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    if opsets.get("ai.onnx", 0) < MIN_OPSET:
        raise InvalidArgument(f"--onnx {path}: opset {opsets.get('ai.onnx', 0)}; opset {MIN_OPSET} or later is "
                              f"needed (re-export it, or convert it with onnx.version_converter)")
    foreign = [n for n in model.graph.node if n.domain not in ("", "ai.onnx")]
    if foreign:
        raise UnsupportedOp(f"ONNX op {foreign[0].domain}.{foreign[0].op_type} (node {foreign[0].name!r}): only the "
                            f"default domain is supported")
    if len(inputs(model)) != 1:
        raise InvalidArgument(f"--onnx {path}: {len(inputs(model))} inputs; a model with one input is supported")
    return model


def inputs(model) -> list:
    weights = {t.name for t in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in weights]


def to_module(model, sample_shape: tuple[int, ...]) -> fx.GraphModule:
    """A torch module computing what `model` computes, for inputs of [N, *sample_shape]."""
    onnx = _onnx()
    from onnx import numpy_helper, shape_inference
    declared = declared_shape(model)
    if len(declared) != len(sample_shape) or any(d not in (None, s) for d, s in zip(declared, sample_shape)):
        raise InvalidArgument(f"the ONNX model's input is [N, {', '.join(str(d or '?') for d in declared)}]; the data "
                              f"gives {list(sample_shape)} per sample")
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    dims = next(i for i in fixed.graph.input if i.name == inputs(model)[0].name).type.tensor_type.shape.dim
    for d, size in zip(dims[1:], sample_shape):
        d.dim_value = size
    inferred = shape_inference.infer_shapes(fixed)
    shapes = {v.name: [d.dim_value or None for d in v.type.tensor_type.shape.dim]
              for v in list(inferred.graph.value_info) + list(inferred.graph.output) + list(inferred.graph.input)}
    consts = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    return Converter(shapes, consts).convert(model, inputs(model)[0].name)


def declared_shape(model) -> list[int | None]:
    """The per-sample dims the ONNX input declares (None where symbolic)."""
    return [d.dim_value or None for d in inputs(model)[0].type.tensor_type.shape.dim][1:]


def runtime(model):
    """inputs -> outputs of the original file, run by onnxruntime's CPU provider (one sample at a time where the
    file fixes its batch)."""
    try:
        import onnxruntime
    except ImportError:
        raise FailedPrecondition("importing an ONNX model checks it with onnxruntime: pip install 'qpart[onnx]'") \
            from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    name = inputs(model)[0].name
    batch = inputs(model)[0].type.tensor_type.shape.dim[0].dim_value

    def run(x: np.ndarray) -> list[np.ndarray]:
        x = np.ascontiguousarray(x, np.float32)
        if not batch:
            return session.run(None, {name: x})
        parts = [session.run(None, {name: x[i:i + batch]}) for i in range(0, len(x), batch)]
        return [np.concatenate([p[j] for p in parts]) for j in range(len(parts[0]))]
    return run


def import_onnx(root: pathlib.Path, name: str, path: pathlib.Path, data_spec: str = "fashion-mnist",
                preprocessing: Preprocessing = Preprocessing(), description: str = "", validation_size: int = 10000,
                seed: int = 0, progress=print, model=None):
    """Map the ONNX file's graph onto the description and import it as importer.import_model does, the check run
    against onnxruntime running the file itself on the data's inputs. model: the file as `load` read it, where
    the caller has read it already."""
    model = model if model is not None else load(path)
    images, _ = datasets.source({"data": data_spec}).part("train")
    produced = preprocessing.output_shape(*images.shape[1:3])
    module = to_module(model, tuple(produced))
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    extra = {"source": {"format": "onnx", "file": path.name, "opset": opset, "producer": model.producer_name[:64],
                        "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}}
    return importer.import_model(root, name, module, data_spec, preprocessing,
                                 description or f"{path.name} (ONNX opset {opset}) imported by qpart",
                                 validation_size, seed, extra, progress, reference=runtime(model))
