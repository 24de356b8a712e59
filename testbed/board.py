"""`make test-board`: the device part on an emulated arm64 board, against a server on this host.

    python -m qpart.testbed.board [--cache /var/cache/qpart-board] [--model lenet] [--count 300]

Builds once (and keeps in --cache) a Debian bookworm arm64 userland with debootstrap, runs it under
qemu-user-static through binfmt_misc (mounted and registered here if they are not), installs the
device part there with pip from the package index (numpy, grpcio and protobuf have aarch64 wheels; no
torch; pip gets the host's CA bundle and resolver configuration), and classifies --count test images
through a real split (a fixed cut inside the model, 8-bit weights and activations) against a
qpart-server on this host's loopback. The board's predictions must equal the host's own run of the
same plan on the same images (on at least 99 %: float32 sums may round differently on aarch64), and so
must its run of the same split on onnxruntime (the `onnxruntime` extra, aarch64 wheels). Then
it generates 32 greedy tokens of the zoo's language model (gpt-fortunes, trained here on a short
schedule if absent) cut after its first block, its head on the board's numpy with its own key/value
cache: the tokens must be the host's.

What it proves: the device part installs on aarch64 from the package index without torch, and its
numpy and onnxruntime executors, wire format and agent give the host's answers there. What it does not: a real board's
speed (qemu runs numpy ~100x slower than native; the times printed are the emulator's), a 32-bit
userland (armv7, whose wheels come from piwheels), or a board's kernel, network and camera.

Exit status: 0 passed, or skipped with the reason (not root, no binfmt_misc, tools that cannot be
installed, a Debian mirror or package index that this host cannot reach while nothing is cached); 1 failed.
"""
import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import urllib.request

from qpart.common import data
from qpart.testbed.processes import ServerProcess

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "protos", "common", "device", "server", "cli", "testbed")
BINFMT = pathlib.Path("/proc/sys/fs/binfmt_misc")
MIRROR = "http://deb.debian.org/debian"
PYPI = "https://pypi.org/simple/numpy/"
LM_MODEL, LM_PROMPT, LM_TOKENS = "gpt-fortunes", "Q: What do you call a fish with no eyes?\nA:", 32
CLEAN_ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
             "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


class Skip(Exception):
    pass


def ensure_tools() -> None:
    if os.geteuid() != 0:
        raise Skip("needs root (debootstrap, chroot, binfmt_misc)")
    missing = [pkg for tool, pkg in (("debootstrap", "debootstrap"), ("qemu-aarch64-static", "qemu-user-static"),
                                     ("update-binfmts", "binfmt-support")) if shutil.which(tool) is None]
    if missing and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True)
    still = [tool for tool in ("debootstrap", "qemu-aarch64-static", "update-binfmts") if shutil.which(tool) is None]
    if still:
        raise Skip(f"cannot install {', '.join(still)} (Debian packages debootstrap, qemu-user-static, binfmt-support)")


def ensure_binfmt() -> None:
    if not (BINFMT / "register").exists():
        mounted = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True,
                                 text=True)
        if mounted.returncode != 0:
            raise Skip(f"binfmt_misc cannot be mounted here: {mounted.stderr.strip()[:200]}")
    if not (BINFMT / "qemu-aarch64").exists():
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
    if not (BINFMT / "qemu-aarch64").exists() or "enabled" not in (BINFMT / "qemu-aarch64").read_text():
        raise Skip("qemu-aarch64 could not be registered with binfmt_misc")


def run(command: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, **kw)
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed ({result.returncode}): {(result.stdout + result.stderr)[-2000:]}")
    return result


def in_board(rootfs: pathlib.Path, *command: str, what: str) -> subprocess.CompletedProcess:
    return run(["chroot", str(rootfs), *command], what, env=CLEAN_ENV)


def ensure_reachable(url: str, what: str) -> None:
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=15).close()
    except (OSError, ValueError) as e:
        raise Skip(f"{what} {url} cannot be reached from this host ({str(e)[:160]})") from None


def ensure_rootfs(cache: pathlib.Path, mirror: str) -> pathlib.Path:
    rootfs = cache / "rootfs-arm64"
    if not (rootfs / ".qpart-complete").exists():
        ensure_reachable(f"{mirror}/dists/bookworm/Release", "the Debian mirror")
        partial = cache / "rootfs-arm64.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(rootfs, ignore_errors=True)
        cache.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        print(f"board: debootstrap bookworm arm64 into {rootfs} (minutes, once)", flush=True)
        run(["debootstrap", "--arch=arm64", "--variant=minbase", "--include=python3,python3-venv,ca-certificates",
             "bookworm", str(partial), mirror], "debootstrap")
        partial.rename(rootfs)
        (rootfs / ".qpart-complete").write_text("")
        print(f"board: userland built in {time.monotonic() - started:.0f} s", flush=True)
    for host_file in ("/etc/resolv.conf", "/etc/ssl/certs/ca-certificates.crt"):
        target = rootfs / host_file.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(host_file, target)
    return rootfs


def install_device(rootfs: pathlib.Path) -> float:
    """pip install the checkout's device part in the board's /opt/qpart (a copy of the sources)."""
    source = rootfs / "opt" / "qpart-src"
    shutil.rmtree(source, ignore_errors=True)
    source.mkdir(parents=True)
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, source / name)
    ensure_reachable(PYPI, "the package index")
    started = time.monotonic()
    if not (rootfs / "opt" / "qpart" / "bin" / "pip").exists():
        in_board(rootfs, "python3", "-m", "venv", "/opt/qpart", what="python3 -m venv on the board")
    in_board(rootfs, "/opt/qpart/bin/pip", "install", "--quiet", "--prefer-binary", "/opt/qpart-src[onnxruntime]",
             what="pip install on the board")
    check = in_board(rootfs, "/opt/qpart/bin/python", "-c", "import importlib.util as u, platform, qpart.device; "
                     "print(platform.machine(), u.find_spec('torch') is None)", what="import qpart.device on the board")
    if check.stdout.split() != ["aarch64", "True"]:
        raise RuntimeError(f"the board's python reports {check.stdout.strip()!r}, expected aarch64 without torch")
    return time.monotonic() - started


def device_command(exe: list[str], target: str, args, cut: int, data_dir: str, out: str,
                   backend: str = "numpy") -> list[str]:
    return [*exe, "--server", target, "--model", args.model, "--cut", str(cut), "--weight-bits", "8",
            "--activation-bits", "8", "--count", str(args.count), "--backend", backend, "--no-cache", "--quiet",
            "--data", data_dir, "--profile", "rpi4", "--rate-mbps", "100", "--rtt-ms", "1", "--json", out]


def board_run(args) -> dict:
    ensure_tools()
    ensure_binfmt()
    cache = args.cache
    rootfs = ensure_rootfs(cache, args.mirror)
    pip_s = install_device(rootfs)
    board_data = rootfs / "opt" / "qpart-data"
    board_data.mkdir(parents=True, exist_ok=True)
    for path in data.data_dir().glob("t10k-*"):
        shutil.copy(path, board_data / path.name)
    models = cache / "models"
    if not (models / args.model / "network.json").exists():
        run([sys.executable, "-m", "qpart.cli.main", "train", args.model, "--models", str(models), "--no-progress"],
            f"qpart train {args.model}")
    from qpart.server.models.repository import ModelRepository
    model = ModelRepository(models).get(args.model)
    inside = [c.cut for c in model.cuts() if 0 < c.cut < model.num_nodes]
    cut = inside[len(inside) // 2]
    with ServerProcess(models) as server:
        host_json = cache / "host.json"
        run(device_command([sys.executable, "-m", "qpart.device.main"], server.target, args, cut,
                           str(data.data_dir()), str(host_json)), "the host's run")
        started = time.monotonic()
        run(["chroot", str(rootfs), *device_command(["/opt/qpart/bin/qpart-device"], server.target, args, cut,
                                                    "/opt/qpart-data", "/tmp/board.json")],
            "the board's run", env=CLEAN_ENV)
        board_s = time.monotonic() - started
        started = time.monotonic()
        run(["chroot", str(rootfs), *device_command(["/opt/qpart/bin/qpart-device"], server.target, args, cut,
                                                    "/opt/qpart-data", "/tmp/board-ort.json", "onnxruntime")],
            "the board's run on onnxruntime", env=CLEAN_ENV)
        ort_s = time.monotonic() - started
    language = language_run(cache, rootfs, cache / "language-models")
    host = json.loads(host_json.read_text())["split"]
    board = json.loads((rootfs / "tmp" / "board.json").read_text())["split"]
    ort = json.loads((rootfs / "tmp" / "board-ort.json").read_text())["split"]
    same = sum(a == b for a, b in zip(host["predictions"], board["predictions"]))
    return {"model": args.model, "cut": cut, "images": len(board["predictions"]), "same": same,
            "board_accuracy": board["accuracy"], "host_accuracy": host["accuracy"], "board_s": board_s,
            "pip_s": pip_s, "backend": board["head"].get("backend"), "language": language,
            "ort": {"images": len(ort["predictions"]), "backend": ort["head"].get("backend"), "board_s": ort_s,
                    "same": sum(a == b for a, b in zip(host["predictions"], ort["predictions"]))}}


def language_run(cache: pathlib.Path, rootfs: pathlib.Path, models: pathlib.Path) -> dict:
    """The language model's head on the board: the zoo's GPT (trained here on a short schedule if absent, into a
    repository of its own) cut after its first block, 8-bit weights and hidden states, LM_TOKENS greedy tokens
    generated on the host and on the board through the same server: the tokens must be the same."""
    if not (models / LM_MODEL / "network.json").exists():
        run([sys.executable, "-m", "qpart.cli.main", "train", LM_MODEL, "--steps", "200", "--models", str(models),
             "--no-progress"], f"qpart train {LM_MODEL} (a short schedule)")
    from qpart.server.models.repository import ModelRepository
    model = ModelRepository(models).get(LM_MODEL)
    cut = next(c.cut for c in model.cuts() if c.tensors and c.tensors[0].endswith("h.0.residual_2"))
    with ServerProcess(models) as server:
        def command(exe, out):
            return [*exe, "--server", server.target, "--model", LM_MODEL, "--cut", str(cut), "--weight-bits", "8",
                    "--activation-bits", "8", "--backend", "numpy", "--no-cache", "--prompt", LM_PROMPT,
                    "--max-new-tokens", str(LM_TOKENS), "--through-end", "--rate-mbps", "100", "--rtt-ms", "1",
                    "--json", out]
        run(command([sys.executable, "-m", "qpart.device.main"], str(cache / "host-lm.json")), "the host's generation")
        started = time.monotonic()
        run(["chroot", str(rootfs), *command(["/opt/qpart/bin/qpart-device"], "/tmp/board-lm.json")],
            "the board's generation", env=CLEAN_ENV)
        board_s = time.monotonic() - started
    host = json.loads((cache / "host-lm.json").read_text())["generation"]
    board = json.loads((rootfs / "tmp" / "board-lm.json").read_text())["generation"]
    return {"cut": cut, "tokens": len(board["tokens"]), "same": host["tokens"] == board["tokens"],
            "backend": board["backend"], "board_s": board_s, "per_token_s": board["token_s"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qpart.testbed.board", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache", type=pathlib.Path, default=pathlib.Path("/var/cache/qpart-board"),
                        help="where the arm64 userland and the trained model are kept (default %(default)s)")
    parser.add_argument("--model", default="lenet", help="zoo model to split (trained here if absent)")
    parser.add_argument("--count", type=int, default=300, help="test images the board classifies")
    parser.add_argument("--mirror", default=MIRROR, help="Debian mirror for debootstrap")
    args = parser.parse_args(argv)
    try:
        r = board_run(args)
    except Skip as e:
        print(f"test-board: SKIPPED: {e}")
        return 0
    except RuntimeError as e:
        print(f"test-board: FAILED: {e}")
        return 1
    print(f"test-board: arm64 board (qemu-user) ran {r['model']} cut {r['cut']} on {r['images']} images with the "
          f"{r['backend']} backend in {r['board_s']:.0f} s (emulated; pip install {r['pip_s']:.0f} s); accuracy board "
          f"{r['board_accuracy']:.2f}% host {r['host_accuracy']:.2f}%; predictions equal on {r['same']}/{r['images']}")
    o = r["ort"]
    print(f"test-board: the same split with the {o['backend']} backend on the board in {o['board_s']:.0f} s "
          f"(emulated); predictions equal to the host's numpy run on {o['same']}/{o['images']}")
    lm = r["language"]
    print(f"test-board: the board generated {lm['tokens']} tokens of {LM_MODEL} cut {lm['cut']} with the "
          f"{lm['backend']} backend in {lm['board_s']:.0f} s (emulated); the same tokens as the host's: {lm['same']}")
    # float32 sums may round differently on aarch64 and move a code at a quantization step: allow 1 %
    ok = r["images"] == args.count and r["same"] >= 0.99 * r["images"] and r["backend"] == "numpy"
    ok = ok and o["images"] == args.count and o["same"] >= 0.99 * o["images"] and o["backend"] == "onnxruntime"
    ok = ok and lm["tokens"] == LM_TOKENS and lm["same"] and lm["backend"] == "numpy"
    print("test-board: PASSED" if ok else "test-board: FAILED: the board's answers differ from the host's")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
