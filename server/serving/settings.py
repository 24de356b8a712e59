"""Server settings: every knob of qpart-server, declared once with its unit; the command line of
`qpart-server` is derived from these fields (qpart.common.config)."""
import pathlib
from dataclasses import dataclass

from qpart.common.config import setting
from qpart.common.costmodel import ServerProfile
from qpart.common.errors import InvalidArgument


@dataclass
class ServerSettings:
    models: pathlib.Path = setting(help="model repository directory")
    host: str = setting("127.0.0.1", 'address to listen on ("0.0.0.0" or "[::]" for all)')
    port: int = setting(50051, "TCP port; 0 picks a free one")
    workers: int = setting(128, "threads that run the RPCs' work (grpc.aio serves the sockets on one event loop): "
                                "an open FetchHead, Generate or ProbeStream holds one; an Infer stream holds one only "
                                "while a message's tail runs")
    max_message_bytes: int = setting(16 << 20, "largest gRPC message accepted or sent, MiB", flag="--max-message-mb",
                                     scale=2**20)
    max_batch: int = setting(1024, "most inputs in one activation batch")
    max_activation_elements: int = setting(1 << 24, "most activation elements in one batch")
    max_tail_elements: int = setting(1 << 23, "most activation elements the tail may hold alive at once for one "
                                              "batch: its inputs times the cut's tail peak (float32: 4 bytes each)")
    head_chunk_bytes: int = setting(256 << 10, "largest FetchHead chunk, bytes")
    min_chunk_bytes: int = setting(16 << 10, "smallest FetchHead chunk but a head's last, bytes (a device asking "
                                             "for less gets this: tiny chunks would multiply the messages)")
    head_cache_bytes: int = setting(256 << 20, "memory for serialized heads, MiB", flag="--head-cache-mb", scale=2**20)
    torch_threads: int = setting(0, "intra-op threads for the tail (0: torch's default)")
    price_per_second: float = setting(1.0, "server cost μ of one busy second, used by the planner")
    server_macs_per_second: float = setting(
        0.0, "tail MAC rate the planner prices with when the tail is not timed (0: Table II's 3 GHz at 1.25 "
             "cycles/MAC)")
    measure_speed: bool = setting(
        True, "price the tail with --server-macs-per-second (or Table II) instead of timing the tail from each "
              "cut at start-up (after 10 ms idle, as a device's next input arrives)", flag="--no-measure-speed")
    speed_profile: pathlib.Path | None = setting(
        None, "the speed profile file restarts and replicas share: its entry for this machine prices plans instead "
              "of timing anew, so the same request gets the same plan (default: .qpart-speed.json in --models; "
              "qpart.server.serving.speed_profile)")
    remeasure_speed: bool = setting(False, "time the server anew at start and replace this machine's entry in the "
                                           "speed profile")
    speed_idle_wait_s: float = setting(10.0, "before timing, wait at most this long for other processes to leave the "
                                             "CPU (figures timed on a busy machine are provisional), s")
    speed_recheck_s: float = setting(30.0, "while the figures are provisional, check this often whether the machine "
                                           "is idle and time them again then, s (0: never)")
    warm_heads: bool = setting(True, "build heads on first request instead of every catalog head at start-up",
                               flag="--cold-heads")
    drain_notice_s: float = setting(1.0, "at shutdown, seconds health reports NOT_SERVING before new RPCs are "
                                         "refused", flag="--drain-notice")
    grace_s: float = setting(5.0, "at shutdown, seconds in-flight RPCs get to finish", flag="--grace")
    tls_cert: pathlib.Path | None = setting(None, "server certificate chain (PEM): serve TLS only", group="security")
    tls_key: pathlib.Path | None = setting(None, "the server certificate's private key (PEM)", group="security")
    tls_client_ca: pathlib.Path | None = setting(
        None, "CA certificate (PEM) of device certificates: mutual TLS, a device certificate is required",
        group="security")
    plan_key_file: pathlib.Path | None = setting(
        None, "hex key that signs plan ids (replicas share it); default: the repository's .qpart-plan-key, made on "
              "first start", group="security")
    plan_id_ttl_s: float = setting(86400.0, "a plan id is served for this long after the Plan call that issued it; "
                                            "later it is refused with FAILED_PRECONDITION and the device plans "
                                            "again, s", flag="--plan-id-ttl", group="security")
    devices: pathlib.Path | None = setting(
        None, "devices file (TOML): bearer tokens (as SHA-256), allowed models, certificate names; every RPC must "
              "then carry `authorization: Bearer <token>`", group="security")
    processes: int = setting(1, "server processes sharing the port (SO_REUSEPORT, Linux): each has its own Python "
                                "interpreter, caches and batcher, and torch threads cores / processes unless "
                                "--torch-threads says, and its own /metrics: process i on --metrics-port + i; "
                                "the kernel spreads connections over them", group="load")
    reuse_port: bool = setting(False, "bind the port with SO_REUSEPORT, so that other processes may share it (set "
                                      "for the processes --processes starts)", group="load")
    compute_slots: int = setting(0, "batches running the tail at once (0: one per CPU core this process may run on)", group="load")
    max_queued: int = setting(64, "batches waiting for a slot; more are refused with RESOURCE_EXHAUSTED at once",
                              group="load")
    batch_max_inputs: int = setting(0, "dynamic batching across devices: activation batches of one model version "
                                       "and cut from different streams run the tail together, up to this many "
                                       "inputs (0 or 1: off, each batch runs alone)", group="load")
    batch_delay_ms: float = setting(2.0, "the longest a batch waits for others to join it, ms (only while other "
                                         "streams are sending to the same model and cut)", group="load")
    load_window_s: float = setting(10.0, "Plan prices the server's part at its current load: the median ratio of "
                                         "queue + tail time to the idle timing over the batches of this many last "
                                         "seconds, when it is 2 or more (0: always as timed idle), s", group="load")
    max_streams: int = setting(0, "concurrent RPCs before RESOURCE_EXHAUSTED (0: --workers minus 8)", group="load")
    max_streams_per_client: int = setting(0, "streams (Infer, FetchHead, ProbeStream) one client may hold open: a "
                                             "device token's, a client certificate's (mutual TLS without tokens), or "
                                             "one host's for anonymous clients (0: three quarters of --max-streams)", group="load")
    max_streams_per_connection: int = setting(32, "streams one connection may hold open (channels of one process to one "
                                                  "server share a connection)", group="load")
    max_connection_age_s: float = setting(0.0, "close each connection after this long (devices reconnect, and spread "
                                               "over replicas added since), s; 0: never", group="load")
    stream_idle_s: float = setting(60.0, "a stream that neither sends nor reads for this long is cancelled, s "
                                         "(0: never)", group="load")
    generation_sessions: int = setting(64, "language-model generation sessions open at once, all clients",
                                       group="generation")
    generation_sessions_per_client: int = setting(8, "generation sessions one client may hold open (counted as "
                                                     "streams are, by device token, certificate or host)",
                                                  group="generation")
    generation_positions: int = setting(4096, "most positions one session may hold (the model's context caps it too)",
                                        group="generation")
    session_cache_bytes: int = setting(64 << 20, "key/value cache one generation session may hold on the server, MiB",
                                       flag="--session-cache-mb", scale=2**20, group="generation")
    generation_cache_bytes: int = setting(1 << 30, "key/value cache all generation sessions may hold together, MiB",
                                          flag="--generation-cache-mb", scale=2**20, group="generation")
    generation_idle_s: float = setting(300.0, "a generation session neither continued nor closed for this long is "
                                              "closed and its cache freed, s (0: never)", group="generation")
    max_draft_tokens: int = setting(16, "most drafted tokens one Generate run may carry for the server to verify "
                                        "(speculative drafting)", group="generation")
    metrics_port: int = setting(0, "serve Prometheus /metrics on this port (0: off); with --processes N, process i "
                                   "serves its own on this port + i", group="observability")
    metrics_host: str = setting("127.0.0.1", "address of the metrics endpoint", group="observability")
    json_logs: bool = setting(False, "one JSON object per log line, with request ids", group="observability")
    log_level: str = setting("INFO", "DEBUG, INFO, WARNING or ERROR", group="observability",
                             choices=["DEBUG", "INFO", "WARNING", "ERROR"])

    def __post_init__(self):
        if not 0 <= self.load_window_s <= 3600:
            raise InvalidArgument(f"--load-window-s must be in [0, 3600] seconds, got {self.load_window_s}")
        if not (0 <= self.speed_idle_wait_s <= 3600 and 0 <= self.speed_recheck_s <= 86400):
            raise InvalidArgument(f"--speed-idle-wait-s must be in [0, 3600] and --speed-recheck-s in [0, 86400] "
                                  f"seconds, got {self.speed_idle_wait_s} and {self.speed_recheck_s}")
        if min(self.generation_sessions, self.generation_sessions_per_client, self.generation_positions,
               self.session_cache_bytes, self.generation_cache_bytes,
               self.max_draft_tokens) < 1 or not 0 <= self.generation_idle_s <= 86400:
            raise InvalidArgument("generation limits: sessions, positions, cache sizes and drafts must be at least 1, "
                                  f"--generation-idle-s in [0, 86400] s, got {self.generation_idle_s}")
        if not 1 <= self.processes <= 256:
            raise InvalidArgument(f"--processes must be 1 to 256, got {self.processes}")
        if self.batch_max_inputs < 0 or not 0 <= self.batch_delay_ms <= 1000:
            raise InvalidArgument(f"batching: --batch-max-inputs must be at least 0 and --batch-delay-ms in [0, 1000], "
                                  f"got {self.batch_max_inputs} and {self.batch_delay_ms}")

    @property
    def profile(self) -> ServerProfile:
        """The server's speed and price as the planner sees them before anything is timed."""
        return ServerProfile(price_per_second=self.price_per_second, macs_per_second=self.server_macs_per_second)
