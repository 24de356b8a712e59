"""The daemon's configuration (qpart-device serve --config device.toml): every key, its default and
unit. deploy/device.toml is a commented example with every key; unknown keys are refused by name."""
import pathlib
from dataclasses import dataclass, fields

from qpart.common.config import setting, tomllib
from qpart.common.errors import InvalidArgument


@dataclass
class DeviceConfig:
    server: str = setting(help="server address host:port, or several separated by commas (replicas, tried in turn)")
    models: list = setting(help="models applications may ask for; each is planned at start", factory=list)
    budget: float = setting(1.0, "largest accuracy drop accepted, points (a classifier's top-1; a language model's "
                                 "next-token agreement with its float model)")
    profile: str = setting("rpi4", "device profile (a bundled name or a TOML file): energy, memory, and the speed "
                                   "when measure_compute is false")
    policy: str = setting("qpart", "how plans are chosen: qpart or a baseline (server_only, device_only, ...)")
    backend: str = setting("auto", "head executor: auto (the fastest installed of numpy and torch), numpy, torch, "
                                       "or onnxruntime (image models' heads only; the onnxruntime extra)")
    measure_compute: bool = setting(True, "price plans with this device's MAC rate, measured at start for the "
                                          "backend (false: the profile's)")
    rate_mbps: float = setting(0.0, "uplink rate for planning, Mbit/s; 0: measured at start with a probe sized "
                                    "to the link")
    rtt_ms: float = setting(0.0, "round-trip time for planning, ms (used with rate_mbps)")
    listen: str = setting("unix:/run/qpart/device.sock", "where applications reach the daemon: unix:PATH or "
                                                        "127.0.0.1:PORT (local only)")
    metrics_port: int = setting(0, "Prometheus /metrics on this port of metrics_host; 0: off")
    metrics_host: str = setting("127.0.0.1", "address of the metrics endpoint")
    cache_dir: str = setting("/var/cache/qpart/heads", "where heads are kept between restarts (by content hash)")
    plan_lifetime_s: float = setting(600.0, "a plan is made again at least this often, s; its head is priced for "
                                            "the inputs expected within it")
    rate_window_s: float = setting(60.0, "the request rate is observed over this window, s")
    initial_reuse: int = setting(100, "inputs a head is priced for before any request was observed")
    replan_factor: float = setting(4.0, "plan again when the expected reuse has changed by this factor")
    token_file: str = setting("", "file holding the bearer token the server requires (empty: none)")
    tls_ca: str = setting("", "CA certificate (PEM) the server's certificate must chain to: TLS (empty: plaintext)")
    tls_cert: str = setting("", "this device's certificate (PEM), for mutual TLS")
    tls_key: str = setting("", "its private key (PEM)")
    tls_server_name: str = setting("", "name the server certificate must carry, if not the host's")
    timeout_s: float = setting(30.0, "deadline of each call to the server, s")
    deadline_ms: float = setting(0.0, "an answer is of use only this long after the server reads the request, ms: "
                                      "the server sheds what cannot make it and Classify answers DEADLINE_EXCEEDED "
                                      "(0: none)")
    follow_link: bool = setting(True, "plan again when the traffic (or a probe of the idle link) shows a lasting "
                                      "change of the link's rate (qpart.device.linkwatch); a link given by rate_mbps "
                                      "stays as given")
    link_probe_s: float = setting(10.0, "with follow_link, probe the link after this long without traffic, s")
    retries: int = setting(6, "attempts after the first when a server is unavailable (backoff, next replica)")
    start_retry_s: float = setting(1.0, "when the server cannot be reached at start, the daemon serves Status "
                                        "(WAITING) and tries again after this long, s, doubling with each attempt")
    start_retry_max_s: float = setting(60.0, "the longest wait between those attempts, s")
    max_head_memory_mb: float = setting(0.0, "most memory a head's parameters may cost once decoded, MiB, checked "
                                             "from their shapes and bits before any is decoded; 0: a quarter of "
                                             "the profile's memory_bytes (256 MiB where it gives none)")
    grace_s: float = setting(5.0, "at SIGTERM, seconds in-flight requests get to finish")
    log_level: str = setting("INFO", "DEBUG, INFO, WARNING or ERROR")

    def __post_init__(self):
        if not self.server:
            raise InvalidArgument("the configuration needs `server`")
        if not self.models or not all(isinstance(m, str) for m in self.models):
            raise InvalidArgument("the configuration needs `models`, a list of model names")
        for name in ("plan_lifetime_s", "rate_window_s", "timeout_s", "start_retry_s"):
            if not getattr(self, name) > 0:
                raise InvalidArgument(f"`{name}` must be positive, got {getattr(self, name)}")
        if not 0.1 <= self.link_probe_s <= 86_400:
            raise InvalidArgument(f"`link_probe_s` must be in [0.1, 86400], got {self.link_probe_s}")
        if not 0 <= self.deadline_ms <= 3_600_000:
            raise InvalidArgument(f"`deadline_ms` must be in [0, 3600000], got {self.deadline_ms}")
        if not self.budget >= 0:
            raise InvalidArgument(f"`budget` must be a number of points, at least 0, got {self.budget}")
        if not self.start_retry_s <= self.start_retry_max_s <= 3600:
            raise InvalidArgument(f"`start_retry_max_s` must be in [start_retry_s, 3600], got {self.start_retry_max_s}")
        if not 0 <= self.max_head_memory_mb <= 1 << 20:
            raise InvalidArgument(f"`max_head_memory_mb` must be in [0, 1048576], got {self.max_head_memory_mb}")
        if self.replan_factor <= 1 or self.initial_reuse < 1:
            raise InvalidArgument("`replan_factor` must be above 1 and `initial_reuse` at least 1")


def load(path: str | pathlib.Path) -> DeviceConfig:
    """The configuration in a TOML file; unknown keys and wrong types are refused naming the key."""
    path = pathlib.Path(path)
    try:
        values = tomllib.loads(path.read_text())
    except OSError as e:
        raise InvalidArgument(f"cannot read the configuration {path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidArgument(f"{path}: {e}") from None
    known = {f.name: f for f in fields(DeviceConfig)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise InvalidArgument(f"{path}: unknown key(s) {', '.join(unknown)}; known: {', '.join(known)}")
    for key, value in values.items():
        kind = known[key].type
        ok = isinstance(value, kind) or (kind is float and isinstance(value, int) and not isinstance(value, bool))
        if not ok or (kind is int and isinstance(value, bool)):
            raise InvalidArgument(f"{path}: `{key}` must be a {kind.__name__}, got {value!r}")
    return DeviceConfig(**{k: float(v) if known[k].type is float else v for k, v in values.items()})
