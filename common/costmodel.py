"""The QPART cost model (eqs 5-8, 11-16, 24-26), extended with round-trip time and head reuse.

Per inference, for a cut (the device runs the nodes before it, O_1 MACs; the server the rest, O_2):
    device time   T_loc = (O_1 + O_enc) / r_d   r_d = f_d / c_d, or the measured MAC rate; O_enc: preprocessing
                  the raw input, quantizing and packing the activations, in MAC-equivalents (timed on the
                  server and converted at its measured MAC rate; not in the paper, but at 100 Mbit/s a 3-bit
                  input saves less transmission time than it costs to pack), so it follows the device's speed
    device energy E_loc = κ_d f_d^2 c_d (O_1 + O_enc)   (eq 6)
    server time   T_ser = O_2 / r_s (or the tail's measured time) + unpacking,  cost C_ser = μ T_ser   (eqs 7-8)
    uplink        D_A bytes at R_up; downlink: the head's bytes / k (0 if the device holds it) plus the scores;
                  bytes streamed while the server computes (a generated token stream) add only what outlasts it
    tx energy     P_d (uplink + downlink seconds)   (eq 16, decision A4: one P_d for both directions)
    round trips   one per inference when the server runs a tail; one more per head download, spread over k
    objective     ω_T T + ω_E (E_loc + E_tx) + ω_C C_ser   (eq 17)
k is the number of inferences that reuse the head (the paper's setting is k = 1).
"""
import math
from dataclasses import dataclass, fields

import numpy as np

from qpart.common.errors import InvalidArgument


# The largest value each field may take: far beyond any real device, link or price, and small enough that
# every product the cost model forms (κ f^2 c, bytes * 8 / rate, weights times seconds) stays finite.
LIMITS = {"clock_hz": 1e12, "cycles_per_mac": 1e6, "macs_per_second": 1e16, "energy_coefficient": 1e-12,
          "tx_power_w": 1e4, "memory_bytes": 2 ** 50, "seconds_per_node": 1.0, "max_draft_tokens": 64,
          "rate_bps": 1e13, "downlink_rate_bps": 1e13, "bandwidth_hz": 1e12, "rtt_s": 3600.0, "price_per_second": 1e9, "time": 1e9, "energy": 1e9, "cost": 1e9}
MAX_MAC_RATE = 1e16     # MACs per second, however the rate is given


def _check_non_negative(obj, signed: tuple[str, ...] = ()) -> None:
    for f in fields(obj):
        value = getattr(obj, f.name)
        if f.name in signed:
            if not math.isfinite(value):
                raise InvalidArgument(f"{type(obj).__name__}.{f.name} must be a finite number, got {value!r}")
            continue
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value) or value < 0:
                raise InvalidArgument(f"{type(obj).__name__}.{f.name} must be a finite non-negative number, got {value!r}")
            if value > LIMITS.get(f.name, math.inf):
                raise InvalidArgument(f"{type(obj).__name__}.{f.name} must be at most {LIMITS[f.name]:g}, got {value:g}")


def _check_mac_rate(obj) -> None:
    if not 1.0 <= obj.mac_rate:
        raise InvalidArgument(f"{type(obj).__name__} needs a MAC rate of at least 1/s: set macs_per_second, or clock_hz "
                              f"and cycles_per_mac (got {obj.mac_rate:g})")
    if obj.mac_rate > MAX_MAC_RATE:
        raise InvalidArgument(f"{type(obj).__name__}: a MAC rate of {obj.mac_rate:g}/s is beyond {MAX_MAC_RATE:g}; "
                              "check clock_hz and cycles_per_mac")


@dataclass(frozen=True)
class DeviceProfile:
    name: str = "device"
    clock_hz: float = 200e6           # f_d: device clock, Hz (paper Table II: 200 MHz)
    cycles_per_mac: float = 5.0       # c_d: average cycles per multiply-accumulate (Table II: 5)
    macs_per_second: float = 0.0      # measured MAC rate of the head executor; > 0 replaces f_d / c_d for time
    energy_coefficient: float = 1e-28  # κ_d: one cycle costs κ_d f_d^2 joules (project default, not in the paper)
    tx_power_w: float = 1.0           # P_d: transmit power, W (Table II: 1 W)
    memory_bytes: int = 0             # memory for the head and activations, bytes; 0 = unlimited
    seconds_per_node: float = 0.0     # measured cost of running one op beside its MACs, s; 0: not known (none)
    image_codings: frozenset | None = None   # qpart.v1.Coding image codings it can encode; None: this machine's
    head_codings: frozenset | None = None    # qpart.v1.TensorCoding head codings it decodes; None: every one
    max_draft_tokens: int = 0         # most tokens it drafts per round for speculative drafting; 0: it does not draft

    def __post_init__(self):
        _check_non_negative(self)
        _check_mac_rate(self)

    @property
    def mac_rate(self) -> float:
        """MACs per second."""
        if self.macs_per_second > 0:
            return self.macs_per_second
        return self.clock_hz / self.cycles_per_mac if self.cycles_per_mac > 0 else 0.0

    @property
    def energy_per_mac(self) -> float:
        """Joules per MAC: κ f^2 per cycle times cycles per MAC (eq 6)."""
        cycles = self.cycles_per_mac or (self.clock_hz / self.macs_per_second if self.macs_per_second else 0.0)
        return self.energy_coefficient * self.clock_hz ** 2 * cycles


def shannon_rate(bandwidth_hz: float, snr_db: float, rayleigh: bool = False) -> float:
    """B log2(1 + SNR) (eq 13); with Rayleigh fading g ~ Exp(1) (eq 11), E_g[B log2(1 + SNR g)]."""
    snr = 10.0 ** (snr_db / 10.0)
    if not rayleigh:
        return bandwidth_hz * math.log2(1.0 + snr)
    # E[ln(1 + s g)] = e^{1/s} E_1(1/s) for g ~ Exp(1); E_1 by its series (converges for all x > 0)
    x = 1.0 / snr
    if x > 50:  # e^x E_1(x) ~ 1/x - 1/x^2 + 2/x^3
        ln_mean = 1.0 / x - 1.0 / x ** 2 + 2.0 / x ** 3
    else:
        e1 = -0.5772156649015329 - math.log(x)
        term = 1.0
        for k in range(1, 200):
            term *= -x / k
            e1 -= term / k
        ln_mean = math.exp(x) * e1
    return bandwidth_hz * ln_mean / math.log(2.0)


@dataclass(frozen=True)
class LinkProfile:
    rate_bps: float = 200e6          # R: uplink rate, bit/s (Table II: 200 Mbit/s); 0: from bandwidth and SNR
    downlink_rate_bps: float = 0.0   # downlink rate, bit/s; 0: same as the uplink
    bandwidth_hz: float = 0.0        # B, Hz (eq 13), used when rate_bps is 0
    snr_db: float = 0.0              # mean SNR, dB (eq 12), used when rate_bps is 0
    rayleigh_fading: bool = False    # expected rate over Rayleigh fading (eq 11)
    rtt_s: float = 0.0               # round-trip time, s (not in the paper; real links have one)

    def __post_init__(self):
        _check_non_negative(self, signed=("snr_db",))
        if not -100.0 <= self.snr_db <= 100.0:
            raise InvalidArgument(f"LinkProfile.snr_db must be between -100 and 100 dB, got {self.snr_db!r}")
        if not self.uplink_bps >= 1.0:
            raise InvalidArgument("the link needs a rate of at least 1 bit/s: set rate_bps, or bandwidth_hz and snr_db "
                                  f"(got {self.uplink_bps:g})")
        if 0 < self.downlink_rate_bps < 1.0:
            raise InvalidArgument(f"LinkProfile.downlink_rate_bps must be 0 (as the uplink) or at least 1 bit/s, got "
                                  f"{self.downlink_rate_bps:g}")

    @property
    def uplink_bps(self) -> float:
        if self.rate_bps > 0:
            return self.rate_bps
        return shannon_rate(self.bandwidth_hz, self.snr_db, self.rayleigh_fading) if self.bandwidth_hz > 0 else 0.0

    @property
    def downlink_bps(self) -> float:
        return self.downlink_rate_bps if self.downlink_rate_bps > 0 else self.uplink_bps


@dataclass(frozen=True)
class ServerProfile:
    clock_hz: float = 3e9            # f_s: server clock, Hz (Table II: 3 GHz)
    cycles_per_mac: float = 1.25     # c_s: cycles per MAC (Table II: 5/4)
    macs_per_second: float = 0.0     # measured tail MAC rate; > 0 replaces f_s / c_s
    price_per_second: float = 1.0    # μ: price of one busy server second (project default)

    def __post_init__(self):
        _check_non_negative(self)
        _check_mac_rate(self)

    @property
    def mac_rate(self) -> float:
        if self.macs_per_second > 0:
            return self.macs_per_second
        return self.clock_hz / self.cycles_per_mac if self.cycles_per_mac > 0 else 0.0


@dataclass(frozen=True)
class Objective:
    time: float = 1.0    # ω_T, per second
    energy: float = 1.0  # ω_E, per joule
    cost: float = 1.0    # ω_C, per price unit

    def __post_init__(self):
        _check_non_negative(self)


@dataclass(frozen=True)
class Workload:
    """What candidate plans move and compute, per inference (bytes are what travels).

    Each field is a number, or a numpy array with one value per candidate: `predict` prices them all at once.
    """
    device_macs: object     # O_1: the head's MACs
    server_macs: object     # O_2: the tail's MACs
    head_bytes: object      # serialized head; 0 when nothing is shipped
    uplink_bytes: object    # activation bytes sent per inference
    downlink_bytes: object  # answer bytes per inference (class scores)
    runs_tail: object       # False when everything runs on the device (no per-inference round trip)
    server_seconds: object = None  # measured tail time per inference; None: server_macs / the server's MAC rate
    encode_macs: object = 0.0      # preprocessing the raw input, quantizing and packing the activations on the
                                   # device, MAC-equivalents
    decode_seconds: object = 0.0   # unpacking and dequantizing it on the server, per inference
    streamed_bytes: object = 0.0   # answer bytes streamed down while the server computes (a server-generated
                                   # token stream): only what outlasts the server's time adds to the total


@dataclass(frozen=True)
class Costs:
    """Per-inference predictions; numbers or arrays, like the Workload they were computed from."""
    device_time_s: object
    uplink_time_s: object
    downlink_time_s: object
    server_time_s: object
    rtt_time_s: object
    total_time_s: object
    device_energy_j: object
    tx_energy_j: object
    server_cost: object
    objective: object

    def at(self, i: int) -> "Costs":
        """The i-th candidate's costs as plain floats."""
        return Costs(*(float(np.asarray(getattr(self, f.name))[i]) for f in fields(self)))


def predict(work: Workload, device: DeviceProfile, link: LinkProfile, server: ServerProfile,
            objective: Objective, inferences_per_head: int = 1, head_held=False) -> Costs:
    k = max(int(inferences_per_head), 1)
    head_bytes, device_macs = np.asarray(work.head_bytes), np.asarray(work.device_macs)
    shipped = np.logical_and(head_bytes > 0, np.logical_not(head_held))
    device_work = device_macs + np.asarray(work.encode_macs, float)
    device_time = device_work / device.mac_rate
    server_time = (np.asarray(work.server_macs) / server.mac_rate if work.server_seconds is None
                   else np.asarray(work.server_seconds, float)) + np.asarray(work.decode_seconds, float)
    uplink = 8.0 * np.asarray(work.uplink_bytes) / link.uplink_bps
    downlink = 8.0 * (np.asarray(work.downlink_bytes) + shipped * head_bytes / k) / link.downlink_bps
    streamed = 8.0 * np.asarray(work.streamed_bytes, float) / link.downlink_bps
    rtt = link.rtt_s * (np.asarray(work.runs_tail, float) + shipped / k)
    downlink_visible = downlink + np.maximum(streamed - server_time, 0.0)      # what the server's work does not hide
    total = device_time + uplink + downlink_visible + server_time + rtt
    device_energy = device_work * device.energy_per_mac
    tx_energy = device.tx_power_w * (uplink + downlink + streamed)
    cost = server.price_per_second * server_time
    value = objective.time * total + objective.energy * (device_energy + tx_energy) + objective.cost * cost
    return Costs(device_time, uplink, downlink_visible, server_time, rtt, total, device_energy, tx_energy, cost, value)
