"""Data sets a model is trained, calibrated and tested on, named by a data spec:

    ""  or "fashion-mnist"   Fashion-MNIST from --data/$QPART_DATA/the Debian package (qpart.common.data)
    DIR with MNIST IDX files  train-images-idx3-ubyte[.gz], ... as Fashion-MNIST ships them
    FILE.npz                  arrays x (uint8 images [N, H, W] or [N, H, W, C]) and y (integer labels [N]);
                              optional x_test, y_test
    DIR of image folders      DIR/<class>/*.png|jpg (read with Pillow), or DIR/train/<class>/... and
                              DIR/test/<class>/...; classes are the folder names, sorted

The test part is the data's own when it has one, else a seeded sixth of it held out here; the
validation split is held out of the rest (qpart.common.data.train_validation_split).
"""
import functools
import os
import pathlib
from dataclasses import dataclass

import numpy as np

from qpart.common import data
from qpart.common.errors import InvalidArgument, NotFound

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
HOLDOUT_SEED = 12345        # seeds the test holdout of data without a test part
HOLDOUT_FRACTION = 1 / 6    # share of such data held out for testing (Fashion-MNIST's 10k of 70k)
MAX_SAMPLES = 10_000_000


@dataclass
class DataSource:
    spec: str                    # what the user named (recorded in the model card)
    name: str                    # "fashion-mnist", or the file or folder name
    classes: list[str]           # class names, by label
    _parts: dict                 # "train"/"test" -> (images, labels)

    def part(self, which: str) -> tuple[np.ndarray, np.ndarray]:
        """(uint8 images [N, H, W] or [N, H, W, C], int64 labels [N]) of the "train" or "test" part."""
        if which not in ("train", "test"):
            raise InvalidArgument(f"unknown data part {which!r}; use train or test")
        if which not in self._parts:
            raise NotFound(f"the data {self.spec!r} has no {which} part")
        if callable(self._parts[which]):          # read when first needed (a device reads only the test part)
            self._parts[which] = self._parts[which]()
        return self._parts[which]


def _holdout(images: np.ndarray, labels: np.ndarray) -> dict:
    order = np.random.default_rng(HOLDOUT_SEED).permutation(len(labels))
    n_test = max(1, int(len(labels) * HOLDOUT_FRACTION))
    test, train = np.sort(order[:n_test]), np.sort(order[n_test:])
    return {"train": (images[train], labels[train]), "test": (images[test], labels[test])}


def _checked(images: np.ndarray, labels: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    if images.dtype != np.uint8 or images.ndim not in (3, 4) or (images.ndim == 4 and images.shape[3] not in (1, 3, 4)):
        raise InvalidArgument(f"{where}: images must be uint8 [N, H, W] or [N, H, W, C]; got {images.dtype} "
                              f"{list(images.shape)}")
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != len(images) or not np.issubdtype(labels.dtype, np.integer):
        raise InvalidArgument(f"{where}: labels must be integers, one per image; got {labels.dtype} {list(labels.shape)}")
    if len(labels) < 2 or len(labels) > MAX_SAMPLES or labels.min() < 0:
        raise InvalidArgument(f"{where}: needs 2..{MAX_SAMPLES} samples with labels >= 0")
    return images, labels.astype(np.int64)


def _npz(path: pathlib.Path) -> DataSource:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError) as e:
        raise InvalidArgument(f"{path} is not a readable .npz file of arrays: {e}") from None
    if "x" not in arrays or "y" not in arrays:
        raise InvalidArgument(f"{path} needs arrays x (images) and y (labels); it has {sorted(arrays)}")
    train = _checked(arrays["x"], arrays["y"], f"{path} x/y")
    parts = ({"train": train, "test": _checked(arrays["x_test"], arrays["y_test"], f"{path} x_test/y_test")}
             if "x_test" in arrays else _holdout(*train))
    classes = [str(i) for i in range(int(max(p[1].max() for p in parts.values())) + 1)]
    return DataSource(str(path), path.name, classes, parts)


def _read_image(path: pathlib.Path) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise InvalidArgument("reading an image folder needs Pillow: pip install pillow") from None
    try:
        with Image.open(path) as img:
            img = img.convert("L") if img.mode in ("L", "1", "I;16", "I", "F", "LA") else img.convert("RGB")
            return np.asarray(img, np.uint8)
    except (OSError, UnidentifiedImageError) as e:
        raise InvalidArgument(f"{path} is not a readable image: {e}") from None


def _folder_part(root: pathlib.Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    images, labels = [], []
    for label, name in enumerate(classes):
        for path in sorted((root / name).iterdir()) if (root / name).is_dir() else []:
            if path.suffix.lower() in IMAGE_SUFFIXES:
                images.append(_read_image(path))
                labels.append(label)
    if not images:
        raise NotFound(f"{root} holds no {'/'.join(IMAGE_SUFFIXES)} images in its class folders")
    shapes = {img.shape for img in images}
    if len(shapes) != 1:
        raise InvalidArgument(f"{root}: images differ in size or channels ({sorted(shapes)[:3]}...); "
                              "bring them to one size first")
    return _checked(np.stack(images), np.asarray(labels), str(root))


def _folder(path: pathlib.Path) -> DataSource:
    split = (path / "train").is_dir() and (path / "test").is_dir()
    root = path / "train" if split else path
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise NotFound(f"{path} has no class folders (DIR/<class>/*.png or DIR/train/<class>/...)")
    train = _folder_part(root, classes)
    parts = {"train": train, "test": _folder_part(path / "test", classes)} if split else _holdout(*train)
    return DataSource(str(path), path.name, classes, parts)


def _idx(directory: pathlib.Path | None, spec: str) -> DataSource:
    base = data.data_dir(directory)
    present = [which for which, (images, _) in data.SPLIT_FILES.items() if any(base.glob(images + "*"))]
    if not present:
        raise NotFound(f"{base} holds no MNIST IDX files ({', '.join(f[0] for f in data.SPLIT_FILES.values())})")
    parts = {which: functools.partial(data.load_split, which, directory) for which in present}
    default = directory is None or pathlib.Path(directory) == pathlib.Path(data.DEFAULT_DATA_DIR)
    labels = data.read_idx(data.find_file(base, data.SPLIT_FILES[present[-1]][1]))
    n = int(labels.max()) + 1
    fashion = default or n == len(data.FASHION_CLASSES) and "fashion" in str(directory).lower()
    classes = list(data.FASHION_CLASSES) if fashion else [str(i) for i in range(n)]
    return DataSource(spec, "fashion-mnist" if fashion else pathlib.Path(directory).name, classes, parts)


def open_data(spec: str | os.PathLike | None = None) -> DataSource:
    """The data a spec names (see the module docstring)."""
    text = str(spec) if spec else ""
    if text in ("", "fashion-mnist"):
        return _idx(data.data_dir(None), "fashion-mnist")
    path = pathlib.Path(text)
    if path.suffix == ".npz":
        if not path.is_file():
            raise NotFound(f"data file {path} does not exist")
        return _npz(path)
    if not path.is_dir():
        raise NotFound(f"data spec {text!r} is not fashion-mnist, a .npz file or a directory")
    if any(path.glob("train-images-idx3-ubyte*")) or any(path.glob("t10k-images-idx3-ubyte*")):
        return _idx(path, text)
    return _folder(path)
