"""Heads: the quantized device part of a model, serialized once and served from a bounded cache.

Coding a head (format 3) takes a while (tens of milliseconds up to a second for the zoo's), so the offline
side (`qpart catalog`) also writes each catalog head to the model's `heads/<content hash>.head`; the server
reads those, checking the hash, instead of coding every catalog head at start-up. A missing or altered file
is built again, never trusted.
"""
import collections
import hashlib
import pathlib
import threading
from dataclasses import dataclass

from qpart.common import network, quant, tensors
from qpart.server.models.repository import Model
from qpart.server.models.split import Split
from qpart.v1 import network_pb2 as pb


@dataclass(frozen=True)
class BuiltHead:
    data: bytes          # the serialized qpart.v1.Head
    content_hash: str    # SHA-256 hex of data

    @property
    def size(self) -> int:
        return len(self.data)


def build_head(model: Model, split: Split, coded: bool = True) -> pb.Head:
    """The nodes before the cut, with each conv2d and linear node's weight and bias packed at its bit width
    and each batch_norm node's scale and shift as float32.

    Per-channel granularity applies to weights; a bias always has one scale (per element would cost more).
    coded: each quantized tensor travels with the coder that ships it smallest (tensors.code_tensor);
    False keeps every tensor dense (for comparisons).
    """
    profile = model.profile
    head = pb.Head(format_version=network.HEAD_FORMAT_VERSION, model=model.name, model_version=model.version,
                   cut=split.cut, network=network.head_spec(model.spec, profile, split.cut))
    widths = dict(zip(profile.cut(split.cut).weight_nodes, split.weight_bits))
    for node in profile.nodes[:split.cut]:
        for pname in node.param_shapes:
            key = network.parameter_name(node.name, pname)
            bits = widths.get(node.index, quant.FLOAT_BITS)
            granularity = split.granularity if pname == "weight" else quant.PER_TENSOR
            packed = tensors.encode(key, model.params[key], bits, granularity)
            head.parameters.append(tensors.code_tensor(packed) if coded else packed)
    return head


def serialize(head: pb.Head) -> BuiltHead:
    data = head.SerializeToString(deterministic=True)
    return BuiltHead(data, hashlib.sha256(data).hexdigest())


HEADS_DIR = "heads"


def head_path(model: Model, content_hash: str) -> pathlib.Path:
    return model.directory / HEADS_DIR / f"{content_hash}.head"


def read_head(model: Model, content_hash: str) -> BuiltHead | None:
    """The stored head of that hash, or None when missing, unreadable or not what the hash says."""
    try:
        data = head_path(model, content_hash).read_bytes()
    except OSError:
        return None
    return BuiltHead(data, content_hash) if hashlib.sha256(data).hexdigest() == content_hash else None


def store_heads(model: Model, splits_and_hashes) -> int:
    """Write each (split, content hash) head that is not stored yet, and remove stored heads of other hashes;
    returns how many were written (offline: `qpart catalog`)."""
    wanted = {h for _, h in splits_and_hashes if h}
    folder = model.directory / HEADS_DIR
    folder.mkdir(exist_ok=True)
    for old in folder.glob("*.head"):
        if old.stem not in wanted:
            old.unlink()
    written = 0
    for split, content_hash in splits_and_hashes:
        if content_hash and read_head(model, content_hash) is None:
            built = serialize(build_head(model, split))
            if built.content_hash == content_hash:
                write_head(model, built)
                written += 1
    return written


def write_head(model: Model, built: BuiltHead) -> None:
    path = head_path(model, built.content_hash)
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(built.data)
    tmp.replace(path)


class HeadStore:
    """Builds heads on demand. Pinned heads (the catalog's: a bounded set) are kept for good; the others (fixed
    plans) share an LRU within a byte budget, so that no number of them can push the catalog's out."""

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = max_bytes
        self._cache: collections.OrderedDict[tuple, BuiltHead] = collections.OrderedDict()
        self._pinned: dict[tuple, BuiltHead] = {}
        self._size = 0
        self._lock = threading.Lock()

    @staticmethod
    def key(model: Model, split: Split) -> tuple:
        """What a head depends on: the weights, the cut and its nodes' widths (not the activations')."""
        return model.name, model.version, split.cut, split.weight_bits, split.granularity

    def get(self, model: Model, split: Split, pin: bool = False, stored: str = "") -> BuiltHead | None:
        """The split's head, or None when the split ships nothing (cut 0); pin: keep it for good; stored: the
        content hash the catalog gives it, to read it from `heads/` rather than build it."""
        if not split.ships_head:
            return None
        key = self.key(model, split)
        with self._lock:
            if key in self._pinned:
                return self._pinned[key]
            if key in self._cache:
                self._cache.move_to_end(key)
                built = self._cache[key]
                if pin:
                    self._pinned[key] = self._cache.pop(key)
                    self._size -= built.size
                return built
        built = (read_head(model, stored) if stored else None) or serialize(build_head(model, split))
        with self._lock:
            if pin:
                self._pinned.setdefault(key, built)
            elif key not in self._cache:
                self._cache[key] = built
                self._size += built.size
                while self._size > self.max_bytes and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._size -= old.size
        return built
