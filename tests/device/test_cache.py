import hashlib
import os
import time

import pytest

from qpart.device.cache import HeadCache


def h(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_round_trip_and_corruption(tmp_path):
    cache = HeadCache(tmp_path)
    cache.put(h(b"abc"), b"abc")
    assert cache.held() == [h(b"abc")] and cache.get(h(b"abc")) == b"abc"
    (tmp_path / f"{h(b'abc')}.head").write_bytes(b"abd")
    assert cache.get(h(b"abc")) is None and cache.held() == []     # corrupted entries are dropped
    with pytest.raises(ValueError):
        cache.put(h(b"x"), b"y")
    assert cache.get("../../etc/passwd") is None


def test_eviction_keeps_the_newest_within_budget(tmp_path):
    cache = HeadCache(tmp_path, max_bytes=250)
    past = time.time() - 100
    for i in range(4):
        data = bytes([i]) * 100
        cache.put(h(data), data)
        os.utime(tmp_path / f"{h(data)}.head", (past + i, past + i))   # written in order, oldest first
    newest = b"z" * 100
    cache.put(h(newest), newest)
    assert sorted(cache.held()) == sorted([h(newest), h(bytes([3]) * 100)])


def test_disabled_cache_keeps_nothing():
    cache = HeadCache(None)
    cache.put(h(b"abc"), b"abc")
    assert cache.held() == [] and cache.get(h(b"abc")) is None
