import gzip
import struct

import numpy as np
import pytest

from qpart.common import data
from qpart.common.errors import InvalidArgument, NotFound


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    (gzip.open if gz else open)(path, "wb").write(payload)


@pytest.mark.parametrize("gz", [False, True])
def test_any_directory_of_idx_files(tmp_path, monkeypatch, gz):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28))
    suffix = ".gz" if gz else ""
    write_idx(tmp_path / f"t10k-images-idx3-ubyte{suffix}", images, gz)
    write_idx(tmp_path / f"t10k-labels-idx1-ubyte{suffix}", np.arange(5), gz)
    monkeypatch.setenv(data.DATA_ENV, str(tmp_path))
    x, y = data.load_split("test")
    assert np.array_equal(x, images) and y.tolist() == [0, 1, 2, 3, 4]
    assert data.to_float(x).shape == (5, 1, 28, 28) and data.to_float(x).max() <= 1.0


def test_truncated_file_is_rejected(tmp_path):
    write_idx(tmp_path / "f", np.zeros((4, 3)))
    (tmp_path / "f").write_bytes((tmp_path / "f").read_bytes()[:-1])
    with pytest.raises(InvalidArgument, match="header declares"):
        data.read_idx(tmp_path / "f")


def test_missing_data_says_how_to_get_it(tmp_path):
    with pytest.raises(NotFound, match="apt-get install dataset-fashion-mnist"):
        data.load_split("test", tmp_path)


def test_real_fashion_mnist(data_dir):
    x, y = data.load_split("train", data_dir)
    assert x.shape == (60000, 28, 28) and sorted(set(y.tolist())) == list(range(10))
    assert data.load_split("test", data_dir)[0].shape == (10000, 28, 28)


def test_validation_split_is_disjoint_and_seeded():
    train, val = data.train_validation_split(100, 20, seed=3)
    assert len(val) == 20 and len(train) == 80 and not set(train) & set(val)
    assert np.array_equal(val, data.train_validation_split(100, 20, seed=3)[1])


def test_an_idx_directory_with_only_the_test_part(tmp_path, data_dir):
    """A device keeps only the test files: they are read, and only when asked for; train is refused by name."""
    import shutil
    from qpart.common import datasets
    from qpart.common.errors import NotFound
    for path in data_dir.glob("t10k-*"):
        shutil.copy(path, tmp_path / path.name)
    source = datasets.open_data(tmp_path)
    images, labels = source.part("test")
    assert images.shape == (10000, 28, 28) and len(source.classes) == 10
    with pytest.raises(NotFound, match="no train part"):
        source.part("train")
    with pytest.raises(NotFound, match="no MNIST IDX files"):
        datasets._idx(tmp_path / "nothing", "x")
