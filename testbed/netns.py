"""A two-host testbed on one machine: network namespaces joined by a veth pair, shaped with tc.

    qpart-server (10.77.0.1, veth qpart-s0)  <-- veth -->  qpart-device (10.77.0.2, veth qpart-d0)

One shape (rate, one-way delay, jitter, loss) applies to both directions. Where the kernel has
netem, `tc qdisc ... netem rate R delay D J loss L` does it all on each veth end. Where it has not
(this project's build machine has tbf and htb only), tbf sets the rate on each end and the delay,
jitter and per-message serialization come from a user-space relay in the server namespace
(`qpart testbed relay`, see qpart.testbed.relay): devices then connect to the relay's port. Loss needs
netem. The shape lives in a state file that `shape` and `fade` rewrite, so rate changes apply live.
Everything here needs root; it touches only the namespaces and addresses it creates.
"""
import json
import math
import pathlib
import random
import subprocess
import time
from dataclasses import asdict, dataclass

from qpart.common.costmodel import shannon_rate
from qpart.common.errors import FailedPrecondition, InvalidArgument

SERVER_NS, DEVICE_NS = "qpart-server", "qpart-device"
SERVER_IF, DEVICE_IF = "qpart-s0", "qpart-d0"
SERVER_IP, DEVICE_IP = "10.77.0.1", "10.77.0.2"
STATE_DIR = pathlib.Path("/run/qpart-testbed")
RELAY_PORT = 50052


@dataclass(frozen=True)
class LinkShape:
    rate_mbit: float = 0.0    # each direction, Mbit/s; 0: unshaped
    delay_ms: float = 0.0     # one-way delay, each direction, ms
    jitter_ms: float = 0.0    # +- jitter on the delay, ms
    loss_pct: float = 0.0     # random loss, percent (netem only)

    def __post_init__(self):
        for name, value in asdict(self).items():
            if not math.isfinite(value) or value < 0:
                raise InvalidArgument(f"link {name} must be a non-negative number, got {value}")
        if self.loss_pct > 100:
            raise InvalidArgument("loss is a percentage, at most 100")


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(list(args), capture_output=True, text=True)
    if check and result.returncode != 0:
        raise FailedPrecondition(f"`{' '.join(args)}` failed: {result.stderr.strip() or result.stdout.strip()}")
    return result


def netns(ns: str, *args: str) -> list[str]:
    return ["ip", "netns", "exec", ns, *args]


class Testbed:
    def __init__(self, state_dir: pathlib.Path = STATE_DIR):
        self.state_file = state_dir / "state.json"

    # --- lifecycle -------------------------------------------------------------------------------
    def up(self, shape: LinkShape = LinkShape()) -> dict:
        self.down()
        run("ip", "netns", "add", SERVER_NS)
        run("ip", "netns", "add", DEVICE_NS)
        run("ip", "link", "add", SERVER_IF, "netns", SERVER_NS, "type", "veth", "peer", "name", DEVICE_IF,
            "netns", DEVICE_NS)
        for ns, dev, ip in ((SERVER_NS, SERVER_IF, SERVER_IP), (DEVICE_NS, DEVICE_IF, DEVICE_IP)):
            run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            run("ip", "-n", ns, "link", "set", dev, "up")
            run("ip", "-n", ns, "link", "set", "lo", "up")
        state = {"netem": self._has_netem(), "server_ip": SERVER_IP, "device_ip": DEVICE_IP,
                 "relay_port": RELAY_PORT}
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        self._write(state)
        return self.shape(shape)

    def down(self) -> None:
        for ns in (SERVER_NS, DEVICE_NS):
            run("ip", "netns", "del", ns, check=False)   # deleting a namespace removes its veth end too
        self.state_file.unlink(missing_ok=True)

    def is_up(self) -> bool:
        return self.state_file.exists() and SERVER_NS in run("ip", "netns", "list").stdout

    def state(self) -> dict:
        if not self.is_up():
            raise FailedPrecondition("the testbed is not up; run `qpart testbed up` (as root)")
        return json.loads(self.state_file.read_text())

    # --- shaping ---------------------------------------------------------------------------------
    def reshape(self, **changes: float) -> dict:
        """Change only the given fields (rate_mbit, delay_ms, jitter_ms, loss_pct) of the current shape."""
        current = self.state().get("shape", {})
        return self.shape(LinkShape(**(current | changes)))

    def shape(self, shape: LinkShape) -> dict:
        """Apply a shape to both directions now (a running relay picks it up from the state file)."""
        state = self.state()
        if shape.loss_pct and not state["netem"]:
            raise FailedPrecondition("this kernel has no netem (tc qdisc netem): loss cannot be emulated; "
                                     "rate comes from tbf and delay from the relay")
        for ns, dev in ((SERVER_NS, SERVER_IF), (DEVICE_NS, DEVICE_IF)):
            if state["netem"]:
                args = []
                if shape.delay_ms:
                    args += ["delay", f"{shape.delay_ms}ms"] + ([f"{shape.jitter_ms}ms"] if shape.jitter_ms else [])
                if shape.loss_pct:
                    args += ["loss", f"{shape.loss_pct}%"]
                if shape.rate_mbit:
                    args += ["rate", f"{shape.rate_mbit}mbit"]
                self._qdisc(ns, dev, ["netem", *args] if args else None)
            else:
                self._qdisc(ns, dev, self._tbf(shape.rate_mbit) if shape.rate_mbit else None)
        state["shape"] = asdict(shape)
        # what the relay reads: in netem mode the kernel does it all and the relay passes bytes untouched
        state["rate_mbit"] = 0.0 if state["netem"] else shape.rate_mbit
        state["delay_ms"] = 0.0 if state["netem"] else shape.delay_ms
        state["jitter_ms"] = 0.0 if state["netem"] else shape.jitter_ms
        self._write(state)
        return state

    @staticmethod
    def _tbf(rate_mbit: float) -> list[str]:
        rate_bytes = rate_mbit * 1e6 / 8
        burst = max(3028, int(rate_bytes * 0.002))      # at least two full frames, or 2 ms at the rate
        limit = max(64 << 10, int(rate_bytes * 0.5))      # up to half a second of queue
        return ["tbf", "rate", f"{rate_mbit}mbit", "burst", str(burst), "limit", str(limit)]

    @staticmethod
    def _qdisc(ns: str, dev: str, qdisc: list[str] | None) -> None:
        run(*netns(ns, "tc", "qdisc", "del", "dev", dev, "root"), check=False)
        if qdisc:
            run(*netns(ns, "tc", "qdisc", "add", "dev", dev, "root", *qdisc))

    def _has_netem(self) -> bool:
        probe = run(*netns(SERVER_NS, "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"), check=False)
        run(*netns(SERVER_NS, "tc", "qdisc", "del", "dev", "lo", "root"), check=False)
        return probe.returncode == 0

    def _write(self, state: dict) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=1))
        tmp.replace(self.state_file)

    # --- fading (eqs 11-13) -------------------------------------------------------------------------
    def fade(self, bandwidth_mhz: float, snr_db: float, coherence_ms: float, duration_s: float,
             delay_ms: float = 0.0, seed: int = 0, report=print) -> None:
        """Every coherence time draw g ~ Exp(1) and set the rate to B log2(1 + SNR g)."""
        rng = random.Random(seed)
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline:
            g = rng.expovariate(1.0)
            snr = 10 ** (snr_db / 10) * g
            rate = max(shannon_rate(bandwidth_mhz * 1e6, 10 * math.log10(snr) if snr > 0 else -100) / 1e6, 0.05)
            self.shape(LinkShape(rate_mbit=round(rate, 3), delay_ms=delay_ms))
            report(f"g={g:.3f} rate={rate:.3f} Mbit/s")
            time.sleep(coherence_ms / 1e3)

    # --- addresses ---------------------------------------------------------------------------------
    def device_target(self, server_port: int) -> str:
        """Where a device in the device namespace should connect: the relay without netem, else the server."""
        state = self.state()
        return f"{SERVER_IP}:{state['relay_port'] if not state['netem'] else server_port}"
