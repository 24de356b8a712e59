"""What an Evaluator streams: its samples chunk by chunk, and a bounded cache of the tensors after a prefix.

Samples are processed in chunks of CHUNK (the chunks qpart.server.models.datasets preprocesses in, so that
every figure is bit for bit the one of a whole-batch run): an evaluation holds one chunk's tensors at a
time, never every intermediate tensor of every sample. What a later evaluation can start from (the input,
the tensors where a split leaves the float path, the tensors it sends across its cut) is kept in a
PrefixCache, bounded by the bytes of the distinct tensor storages it really holds.
"""
import collections
import ctypes
import ctypes.util
import functools

import numpy as np
import torch

from qpart.common.preprocess import Preprocessing
from qpart.server.models import datasets

CHUNK = datasets.CHUNK   # samples per torch call; the preprocessing's chunks, so that inputs match bit for bit
DEFAULT_CACHE_BYTES = 384 << 20   # a PrefixCache's bound unless given: a catalog build's three evaluators share one


HEAP_SLACK_BYTES = 256 << 20   # free heap left in place after an evaluation; more goes back to the system (evaluated)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.lru_cache(maxsize=1)
def _glibc():
    """(malloc_trim, mallinfo2) of glibc, or None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        trim, info = libc.malloc_trim, libc.mallinfo2
    except (OSError, AttributeError):
        return None
    info.restype = _MallInfo2
    return trim, info


def evaluated() -> None:
    """After an evaluation: when the heap holds more than HEAP_SLACK_BYTES free, hand its free pages back. A chunk's
    tensors of a few to a few tens of MB come from the heap, where what one evaluation frees is left scattered
    between what the cache keeps; without this the peak grew by up to twice as much, and varied from run to run."""
    found = _glibc()
    if found is not None and found[1]().fordblks > HEAP_SLACK_BYTES:
        found[0](0)


def channels_last(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t


class Inputs:
    """A model's float32 inputs [n, *input_shape], handed out chunk by chunk (chunk k: samples k*CHUNK onwards)."""

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def chunks(self) -> int:
        return -(-len(self) // CHUNK)

    def array(self, k: int) -> np.ndarray:
        """Chunk k as float32 numpy."""
        raise NotImplementedError

    def chunk(self, k: int) -> torch.Tensor:
        """Chunk k as the evaluator runs it: a torch tensor, images channels-last (faster convolutions)."""
        return channels_last(torch.from_numpy(self.array(k)))

    def nbytes(self) -> int:
        """What this object itself keeps in memory."""
        return 0


class ArrayInputs(Inputs):
    """Inputs given as one float32 array (the caller holds it; chunks are views of it)."""

    def __init__(self, x: np.ndarray):
        self.x = np.ascontiguousarray(x, np.float32)

    def __len__(self) -> int:
        return len(self.x)

    def array(self, k: int) -> np.ndarray:
        return self.x[k * CHUNK:(k + 1) * CHUNK]

    def nbytes(self) -> int:
        return self.x.nbytes


class ImageInputs(Inputs):
    """Raw uint8 images, preprocessed one chunk at a time when needed: the first `n` of `images`, each chunk cut
    from the preprocessing of the CHUNK images it falls in (as datasets.preprocessed(images)[:n] gives them)."""

    def __init__(self, images: np.ndarray, preprocessing: Preprocessing, n: int | None = None):
        self.images = images
        self.preprocessing = preprocessing
        self.n = len(images) if n is None else min(n, len(images))

    def __len__(self) -> int:
        return self.n

    def array(self, k: int) -> np.ndarray:
        start = k * CHUNK
        out = self.preprocessing.apply(self.images[start:start + CHUNK])
        return out[:max(self.n - start, 0)]

    def nbytes(self) -> int:
        return self.images.nbytes


class MappedInputs(Inputs):
    """Another Inputs' chunks through fn (e.g. coded as image files and decoded, as the server sees them)."""

    def __init__(self, source: Inputs, fn):
        self.source, self.fn = source, fn

    def __len__(self) -> int:
        return len(self.source)

    def array(self, k: int) -> np.ndarray:
        return self.fn(self.source.array(k))


def as_inputs(x) -> Inputs:
    return x if isinstance(x, Inputs) else ArrayInputs(x)


def compact(x: torch.Tensor) -> torch.Tensor:
    """An input chunk as kept: one channel when all its channels are equal (a gray image repeated, as the zoo's
    3x96x96 camera stand-ins are), else as it is. expand() restores it exactly."""
    if x.dim() == 4 and x.shape[1] > 1 and all(torch.equal(x[:, 0], x[:, c]) for c in range(1, x.shape[1])):
        return x[:, :1].contiguous()
    return x


def expand(kept: torch.Tensor, channels: int) -> torch.Tensor:
    """The chunk compact() kept, as the evaluator runs it (channels-last)."""
    if kept.dim() == 4 and kept.shape[1] != channels:
        return channels_last(kept.expand(-1, channels, -1, -1))
    return kept


def _storages(env: dict) -> dict[int, int]:
    """data pointer -> bytes of each distinct storage the environment's tensors live in."""
    out = {}
    for t in env.values():
        storage = t.untyped_storage()
        out[storage.data_ptr()] = storage.nbytes()
    return out


class PrefixCache:
    """Environments (tensor name -> the tensor of one chunk) by key, least recently used out first, those put with
    `lasting` (inputs, which every evaluation starts from) only when no other is left. Its size is the bytes of the
    distinct storages its environments hold: a tensor that several environments share counts once, a view counts
    its whole storage (what stays alive). An environment larger than the bound is not kept."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._entries: collections.OrderedDict = collections.OrderedDict()   # key -> (env, storages, lasting)
        self._held: dict[int, list] = {}      # data pointer -> [bytes, entries holding it]
        self.bytes = 0                        # bytes of the distinct storages held now
        self.peak_bytes = 0                   # the most it ever held
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key) -> dict | None:
        found = self._entries.get(key)
        if found is None:
            self.misses += 1
            return None
        self.hits += 1
        self._entries.move_to_end(key)
        return found[0]

    def __contains__(self, key) -> bool:
        return key in self._entries

    def put(self, key, env: dict, lasting: bool = False) -> None:
        if self.max_bytes <= 0 or key in self._entries:
            return
        storages = _storages(env)
        self._entries[key] = (env, storages, lasting)
        for ptr, size in storages.items():
            held = self._held.setdefault(ptr, [size, 0])
            if held[1] == 0:
                self.bytes += size
            held[1] += 1
        while self.bytes > self.max_bytes and self._entries:
            oldest = next((k for k, e in self._entries.items() if not e[2]), None)
            self._drop(oldest if oldest is not None else next(iter(self._entries)))   # the new one too, when over alone
        self.peak_bytes = max(self.peak_bytes, self.bytes)

    def _drop(self, key) -> None:
        _, storages, _ = self._entries.pop(key)
        for ptr in storages:
            held = self._held[ptr]
            held[1] -= 1
            if held[1] == 0:
                self.bytes -= held[0]
                del self._held[ptr]

    def discard(self, owner) -> None:
        """Drop every entry whose key starts with `owner` (an evaluator that is done)."""
        for key in [k for k in self._entries if k[0] == owner]:
            self._drop(key)

    def clear(self) -> None:
        for key in list(self._entries):
            self._drop(key)
