"""Fashion-MNIST (or any MNIST-format IDX files): reading, splitting and scaling.

The directory is, in order of precedence: the explicit argument (--data), $QPART_DATA, then the
Debian package dataset-fashion-mnist's /usr/share/datasets/fashion-mnist. Files may be gzipped.
"""
import gzip
import os
import pathlib

import numpy as np

from qpart.common.errors import InvalidArgument, NotFound

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
DATA_ENV = "QPART_DATA"
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                   "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MAX_IDX_BYTES = 1 << 31


class DatasetMissing(NotFound):
    pass


def data_dir(override: str | os.PathLike | None = None) -> pathlib.Path:
    return pathlib.Path(override or os.environ.get(DATA_ENV) or DEFAULT_DATA_DIR)


def find_file(root: pathlib.Path, stem: str) -> pathlib.Path:
    for candidate in (root / stem, root / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DatasetMissing(
        f"{stem}[.gz] not found in {root}. Install the Debian package with "
        f"`apt-get install dataset-fashion-mnist` (files land in {DEFAULT_DATA_DIR}), or point --data "
        f"or ${DATA_ENV} at a directory of MNIST-format IDX files "
        f"({', '.join(f for pair in SPLIT_FILES.values() for f in pair)}, optionally gzipped).")


def read_idx(path: pathlib.Path) -> np.ndarray:
    """Read one IDX file (magic 0x0000TTNN: type TT, NN dimensions), checking its size against its header."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read(MAX_IDX_BYTES + 1)
    if len(raw) > MAX_IDX_BYTES:
        raise InvalidArgument(f"{path} is larger than {MAX_IDX_BYTES} bytes")
    if len(raw) < 4 or raw[0] or raw[1]:
        raise InvalidArgument(f"{path} is not an IDX file (bad magic number)")
    dtype, ndim = _IDX_DTYPES.get(raw[2]), raw[3]
    if dtype is None or ndim == 0:
        raise InvalidArgument(f"{path}: unsupported IDX type 0x{raw[2]:02x} or no dimensions")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise InvalidArgument(f"{path} is truncated in its header")
    dims = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    dtype = np.dtype(dtype)
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise InvalidArgument(f"{path}: header declares {dims} ({expected} bytes), file has {len(raw)} bytes")
    return np.frombuffer(raw, dtype, offset=header).reshape(dims)


def load_split(split: str, root: str | os.PathLike | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, H, W], labels int64 [N]) of the "train" or "test" split."""
    if split not in SPLIT_FILES:
        raise InvalidArgument(f"unknown split {split!r}; use one of {sorted(SPLIT_FILES)}")
    base = data_dir(root)
    images_name, labels_name = SPLIT_FILES[split]
    images = read_idx(find_file(base, images_name))
    labels = read_idx(find_file(base, labels_name)).astype(np.int64)
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise InvalidArgument(f"{base}: {split} images {images.shape} and labels {labels.shape} do not match")
    return images, labels


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W] -> float32 [N, 1, H, W] in [0, 1], the models' input."""
    return (images.astype(np.float32) / 255.0)[:, None, :, :]


def train_validation_split(n: int, validation_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation) of a seeded permutation of range(n); validation is held out from training."""
    if not 0 < validation_size < n:
        raise InvalidArgument(f"validation size must be in 1..{n - 1}, got {validation_size}")
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[validation_size:]), np.sort(order[:validation_size])
