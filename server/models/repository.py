"""The model repository: one directory per model, nothing in it is ever unpickled.

    <root>/<name>/network.json         the network description (qpart.v1.NetworkSpec version 2, protobuf JSON)
    <root>/<name>/weights.safetensors  float32 parameters named "<node>.weight", "<node>.bias", ...
    <root>/<name>/card.json            data spec and preprocessing, splits, measured accuracy, tensor ranges
    <root>/<name>/catalog.json         the planner's offline catalog (built by `qpart catalog`)
"""
import hashlib
import json
import os
import pathlib
import threading
from dataclasses import dataclass, field

import numpy as np
from google.protobuf import json_format
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from qpart.common import network, quant, torchnet
from qpart.common.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound
from qpart.common.names import check_name, shown
from qpart.common.preprocess import Preprocessing
from qpart.v1 import network_pb2 as pb

NETWORK_FILE = "network.json"
WEIGHTS_FILE = "weights.safetensors"
CARD_FILE = "card.json"
CATALOG_FILE = "catalog.json"


def _write_atomic(path: pathlib.Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(path: pathlib.Path, value) -> None:
    _write_atomic(path, (json.dumps(value, indent=2, sort_keys=True) + "\n").encode())


def read_measurement(path: pathlib.Path, name: str, version: int, model_version: str) -> dict | None:
    """A JSON file `qpart catalog NAME` measures beside a model (coding.json, codecs.json): its content, or None
    when missing or of another format or other weights; FailedPrecondition naming the fix when unreadable."""
    try:
        value = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FailedPrecondition(f"{path} cannot be read ({e}); measure it again with `qpart catalog {name} "
                                 f"--force`") from None
    if not isinstance(value, dict) or value.get("format_version") != version or value.get("model_version") != model_version:
        return None
    return value


def corrupt(path: pathlib.Path, name: str, error: Exception) -> FailedPrecondition:
    return FailedPrecondition(f"{path} is corrupt ({type(error).__name__}: {error}); measure it again with "
                              f"`qpart catalog {name} --force`")


@dataclass(frozen=True)
class CutTensor:
    """One tensor crossing the cut, as the plan says it travels."""
    name: str
    sample_shape: tuple[int, ...]
    bits: int
    quantizer: quant.QuantParams | None   # None: float32


@dataclass
class Model:
    name: str
    directory: pathlib.Path
    spec: pb.NetworkSpec
    params: dict[str, np.ndarray]
    card: dict
    version: str
    profile: network.NetworkProfile = field(init=False)
    preprocessing: Preprocessing = field(init=False)
    _derived: dict = field(default_factory=dict, init=False, repr=False)  # built modules, activation quantizers
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def __post_init__(self):
        self.profile = network.analyze(self.spec)
        known = set()
        for node in self.spec.nodes:        # every parameter present with its shape, and none left over
            torchnet.node_parameters(node, self.params)
            known.update(network.parameter_name(node.name, p) for p in network.parameter_shapes(node))
        extra = sorted(set(self.params) - known)
        if extra:
            raise InvalidArgument(f"model {self.name!r}: parameter {extra[0]!r} belongs to no node")
        self.preprocessing = Preprocessing.from_dict(self.card.get("preprocessing", {}))

    @property
    def num_nodes(self) -> int:
        return self.profile.num_nodes

    def cuts(self) -> list[network.Cut]:
        """The cuts a plan may name: at most network.MAX_CUT_TENSORS tensors cross each."""
        return self.profile.cuts(network.MAX_CUT_TENSORS)

    def module(self, start: int = 0, stop: int | None = None) -> torchnet.GraphModule:
        """Float module of nodes[start:stop], built once and shared (eval mode)."""
        key = (start, stop)
        with self._lock:
            if key not in self._derived:
                self._derived[key] = torchnet.GraphModule(self.spec, self.profile, self.params, start, stop)
            return self._derived[key]

    def tail(self, cut: int) -> torchnet.GraphModule:
        return self.module(cut)

    def tensor_range(self, tensor: str) -> tuple[float, float]:
        """Min and max of a tensor of the network, measured on the validation split."""
        ranges = self.card.get("tensor_ranges", {})
        if tensor not in ranges:
            raise FailedPrecondition(f"model {self.name!r} has no calibrated range for tensor {tensor!r}; "
                                     "import or train it again")
        lo, hi = ranges[tensor]
        return float(lo), float(hi)

    def activation_params(self, tensor: str, bits: int) -> quant.QuantParams:
        key = ("activation", tensor, bits)
        if key not in self._derived:
            self._derived[key] = quant.params_for_range(*self.tensor_range(tensor), bits)
        return self._derived[key]

    def cut_quantizers(self, split) -> list[quant.QuantParams | None]:
        """The static quantizer of each tensor a split sends (None: float32)."""
        tensors = self.profile.cut(split.cut).tensors
        return [None if bits == quant.FLOAT_BITS else self.activation_params(t, bits)
                for t, bits in zip(tensors, split.activation_bits)]

    def crossing(self, split) -> list[CutTensor]:
        """What a split sends across its cut, in order."""
        cut = self.profile.cut(split.cut)
        return [CutTensor(name, shape, bits, q) for name, shape, bits, q in
                zip(cut.tensors, cut.shapes, split.activation_bits, self.cut_quantizers(split))]

    @property
    def catalog_path(self) -> pathlib.Path:
        return self.directory / CATALOG_FILE


def model_version(directory: pathlib.Path) -> str:
    digest = hashlib.sha256()
    for fname in (NETWORK_FILE, WEIGHTS_FILE):
        digest.update((directory / fname).read_bytes())
    return digest.hexdigest()[:16]


def load_model(directory: pathlib.Path) -> Model:
    name = check_name(directory.name)
    try:
        text = (directory / NETWORK_FILE).read_text()
        version = json.loads(text).get("formatVersion", json.loads(text).get("format_version"))
        if version not in network.FORMATS_READ:
            raise FailedPrecondition(
                f"model {name!r}: {directory / NETWORK_FILE} is a version-{version} description, this server reads "
                f"versions {', '.join(map(str, network.FORMATS_READ))}; rebuild it with `qpart train {name}` (zoo models) or "
                f"`qpart import {name} ...`")
        spec = json_format.Parse(text, pb.NetworkSpec())
        params = load_file(str(directory / WEIGHTS_FILE))
        card = json.loads((directory / CARD_FILE).read_text())
    except FileNotFoundError as e:
        raise NotFound(f"model {name!r} in {directory.parent} is incomplete: {e.filename} is missing") from None
    except (json_format.ParseError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"model {name!r}: cannot parse its files in {directory}: {e}") from None
    except SafetensorError as e:
        raise DataLoss(f"model {name!r}: {directory / WEIGHTS_FILE} is not a valid safetensors file: {e}") from None
    except OSError as e:
        raise FailedPrecondition(f"model {name!r}: cannot read {e.filename or directory}: {e.strerror or e}") from None
    return Model(name, directory, spec, params, card, model_version(directory))


def save_model(root: pathlib.Path, name: str, spec: pb.NetworkSpec, params: dict[str, np.ndarray], card: dict) -> Model:
    directory = pathlib.Path(root) / check_name(name)
    directory.mkdir(parents=True, exist_ok=True)
    _write_atomic(directory / NETWORK_FILE, json_format.MessageToJson(spec, indent=2).encode())
    tmp = directory / (WEIGHTS_FILE + ".tmp")
    save_file({k: np.ascontiguousarray(v, np.float32) for k, v in params.items()}, str(tmp))
    os.replace(tmp, directory / WEIGHTS_FILE)
    write_json(directory / CARD_FILE, card | {"name": name})
    return load_model(directory)


class ModelRepository:
    """The models under one directory, loaded at start-up; `reload()` picks up retrained models."""

    def __init__(self, root: str | os.PathLike):
        self.root = pathlib.Path(root)
        if not self.root.is_dir():
            raise NotFound(f"model repository {self.root} does not exist; train a model into it with `qpart train`")
        self._models: dict[str, Model] = {}
        self.reload()

    def reload(self) -> None:
        models = {}
        for directory in sorted(self.root.iterdir()):
            if directory.is_dir() and (directory / NETWORK_FILE).exists():
                model = load_model(directory)
                models[model.name] = model
        self._models = models

    def names(self) -> list[str]:
        return sorted(self._models)

    def get(self, name: str) -> Model:
        model = self._models.get(name)
        if model is None:
            known = ", ".join(self.names()) or "none"
            raise NotFound(f"unknown model {shown(name)}; this server has: {known}")
        return model

    def __iter__(self):
        return iter(self._models[name] for name in self.names())
