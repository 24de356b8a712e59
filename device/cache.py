"""Content-addressed head cache: <dir>/<sha256>.head, verified on every read, bounded in bytes."""
import hashlib
import os
import pathlib
import re

MAX_HELD = 4096   # hashes a Plan request may list (PlanRequest.held_heads)
_HASH = re.compile(r"^[0-9a-f]{64}$")


class HeadCache:
    """directory None: a cache that keeps nothing (every head is downloaded)."""

    def __init__(self, directory: str | os.PathLike | None, max_bytes: int = 512 << 20):
        self.directory = pathlib.Path(directory) if directory is not None else None
        self.max_bytes = max_bytes   # least recently used heads are removed beyond this many bytes

    def _path(self, content_hash: str) -> pathlib.Path | None:
        if self.directory is None or not _HASH.match(content_hash or ""):
            return None
        return self.directory / f"{content_hash}.head"

    def held(self) -> list[str]:
        if self.directory is None or not self.directory.is_dir():
            return []
        paths = [p for p in self.directory.glob("*.head") if _HASH.match(p.stem)]
        newest = sorted(paths, key=lambda p: p.stat().st_mtime, reverse=True)[:MAX_HELD]   # the server reads 4,096
        return sorted(p.stem for p in newest)

    def get(self, content_hash: str) -> bytes | None:
        """The cached bytes if present and intact; a corrupted entry is deleted."""
        path = self._path(content_hash)
        if path is None or not path.is_file():
            return None
        data = path.read_bytes()
        if hashlib.sha256(data).hexdigest() != content_hash:
            path.unlink(missing_ok=True)
            return None
        os.utime(path)
        return data

    def put(self, content_hash: str, data: bytes) -> None:
        if hashlib.sha256(data).hexdigest() != content_hash:
            raise ValueError("refusing to cache bytes whose hash does not match")
        path = self._path(content_hash)
        if path is None:
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + f".{os.getpid()}.tmp")
        tmp.write_bytes(data)
        os.replace(tmp, path)
        self._evict()

    def _evict(self) -> None:
        entries = sorted(self.directory.glob("*.head"), key=lambda p: p.stat().st_mtime, reverse=True)
        total = 0
        for path in entries:
            total += path.stat().st_size
            if total > self.max_bytes and path != entries[0]:
                path.unlink(missing_ok=True)
