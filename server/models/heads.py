"""Heads: the quantized device part of a model, serialized once and served from a bounded cache.

Coding a head (format 3) takes a while (tens of milliseconds up to a second for the zoo's), so the offline
side (`qpart catalog`) also writes each catalog head to the model's `heads/<content hash>.head`; the server
reads those, checking the hash, instead of coding every catalog head at start-up. A missing or altered file
is built again, never trusted.
"""
import collections
import hashlib
import logging
import os
import pathlib
import threading
from concurrent import futures
from dataclasses import dataclass

from qpart.common import network, quant, tensors
from qpart.server.models.repository import Model
from qpart.server.models.split import Split
from qpart.v1 import network_pb2 as pb

log = logging.getLogger("qpart.server.heads")
ENTRY_BYTES = 512      # a cached head's bookkeeping beside its bytes: object, hash, key, LRU link (measured ~400)


@dataclass(frozen=True)
class BuiltHead:
    data: bytes          # the serialized qpart.v1.Head
    content_hash: str    # SHA-256 hex of data

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def resident(self) -> int:
        """What keeping it costs: its bytes and its bookkeeping in the cache."""
        return len(self.data) + ENTRY_BYTES


def build_head(model: Model, split: Split, coded: bool = True, codings: frozenset | None = None) -> pb.Head:
    """The nodes before the cut, with each conv2d and linear node's weight and bias packed at its bit width
    and each batch_norm node's scale and shift as float32.

    Per-channel granularity applies to weights; a bias always has one scale (per element would cost more).
    coded: each quantized tensor travels with the coder that ships it smallest (tensors.code_tensor) among
    `codings`, those the device decodes (None: every one); False keeps every tensor dense (for comparisons).
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
            head.parameters.append(tensors.code_tensor(packed, codings) if coded else packed)
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
    plans) share an LRU within what the byte budget leaves, so that no number of them can push the catalog's out.

    The budget (--head-cache-mb) bounds what the cache really keeps resident: every head's bytes and its
    bookkeeping (ENTRY_BYTES), pinned heads included. Heads are built (or read from `heads/`) on one builder
    thread, one at a time, and a head asked for while it is being built is built once: built on the gRPC
    handler threads, each build's freed working set (quantized copies, the coders' buffers, the message)
    stayed in that thread's malloc arena, so RSS grew by up to a build's peak per handler thread (200 heads
    asked for by 16 threads against a 4 MB budget: +26 MB, peak +46 MB; on the builder +3 MB, peak +4.5 MB;
    tests/server/serving/test_head_memory.py). A head larger than what the budget leaves is served, not kept.
    Heads being sent (FetchHead holds its head until the last chunk) are outside the budget."""

    def __init__(self, max_bytes: int = 256 << 20):
        self.max_bytes = max_bytes
        self._cache: collections.OrderedDict[tuple, BuiltHead] = collections.OrderedDict()
        self._pinned: dict[tuple, BuiltHead] = {}
        self._building: dict[tuple, futures.Future] = {}
        self._size = 0              # resident bytes of the LRU's heads
        self._pinned_size = 0       # resident bytes of the pinned heads
        self._lock = threading.Lock()
        self._warned = False

    @property
    def resident_bytes(self) -> int:
        """What the cache keeps: every cached and pinned head with its bookkeeping."""
        return self._size + self._pinned_size

    @staticmethod
    def key(model: Model, split: Split, codings: frozenset | None = None) -> tuple:
        """What a head depends on: the weights, the cut and its nodes' widths (not the activations'), and the
        codings the device decodes."""
        return (model.name, model.version, split.cut, split.weight_bits, split.granularity,
                tuple(sorted(codings)) if codings is not None else None)

    def get(self, model: Model, split: Split, pin: bool = False, stored: str = "",
            codings: frozenset | None = None) -> BuiltHead | None:
        """The split's head, or None when the split ships nothing (cut 0); pin: keep it for good; stored: the
        content hash the catalog gives it, to read it from `heads/` rather than build it (heads with every
        coding only); codings: those the device decodes (None: every one)."""
        if not split.ships_head:
            return None
        key = self.key(model, split, codings)
        stored = stored if codings is None else ""
        with self._lock:
            built = self._pinned.get(key) or self._cache.get(key)
            if built is not None:
                self._keep(key, built, pin)
                return built
            pending = self._building.get(key)
            if pending is None:
                pending = self._building[key] = _builder().submit(_make, model, split, stored, codings)
        try:
            built = pending.result()
        finally:
            with self._lock:
                if self._building.get(key) is pending:
                    del self._building[key]
        with self._lock:
            built = self._pinned.get(key) or self._cache.get(key) or built     # one object per head
            self._keep(key, built, pin)
        return built

    def _keep(self, key: tuple, built: BuiltHead, pin: bool) -> None:
        """Hold on to a head (under the lock): pinned for good, else in the LRU within what the budget leaves."""
        if key in self._pinned:
            return
        if pin:
            if self._cache.pop(key, None) is not None:
                self._size -= built.resident
            self._pinned[key] = built
            self._pinned_size += built.resident
            if self._pinned_size > self.max_bytes and not self._warned:
                self._warned = True
                log.warning("the catalog's heads take %.1f MB, more than the head cache's %.1f MB (--head-cache-mb): "
                            "they are kept, and no other head is", self._pinned_size / 2**20, self.max_bytes / 2**20)
        elif key in self._cache:
            self._cache.move_to_end(key)
        elif built.resident <= self.max_bytes - self._pinned_size:    # else served, not kept: it would flush the LRU
            self._cache[key] = built
            self._size += built.resident
        while self._cache and self._size + self._pinned_size > self.max_bytes:
            _, old = self._cache.popitem(last=False)
            self._size -= old.resident


def _make(model: Model, split: Split, stored: str, codings: frozenset | None = None) -> BuiltHead:
    return (read_head(model, stored) if stored else None) or serialize(build_head(model, split, codings=codings))


_builders: dict[int, futures.ThreadPoolExecutor] = {}
_builders_lock = threading.Lock()


def _builder() -> futures.ThreadPoolExecutor:
    """This process's one head-building thread (see HeadStore): its working set is reused from one build to the
    next. Per process id, as a forked child does not inherit the thread."""
    with _builders_lock:
        pid = os.getpid()
        if pid not in _builders:
            _builders.clear()
            _builders[pid] = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="qpart-head-builder")
        return _builders[pid]
