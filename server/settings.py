"""Server settings: every knob of qpart-server, with its unit."""
import pathlib
from dataclasses import dataclass, field

from qpart.common.costmodel import ServerProfile


@dataclass
class ServerSettings:
    models: pathlib.Path                          # model repository directory
    host: str = "127.0.0.1"                       # address to listen on ("0.0.0.0" or "[::]" for all)
    port: int = 50051                             # TCP port; 0 picks a free one
    workers: int = 128                            # gRPC handler threads: each open stream holds one
    drain_notice_s: float = 1.0                   # at shutdown: seconds health says NOT_SERVING before new work is refused
    max_message_bytes: int = 16 << 20             # largest gRPC message accepted or sent, bytes
    max_batch: int = 1024                         # most inputs in one ActivationBatch
    max_activation_elements: int = 1 << 24        # most activation elements in one batch
    head_chunk_bytes: int = 256 << 10             # FetchHead chunk size, bytes
    head_cache_bytes: int = 256 << 20             # memory for serialized heads, bytes
    torch_threads: int = 0                        # intra-op threads for the tail; 0: torch's default
    measure_speed: bool = True                    # time the tail from each cut at start-up; the planner prices with it
    warm_heads: bool = True                       # build every catalog pattern's head at start-up (no cold fetch)
    profile: ServerProfile = field(default_factory=ServerProfile)  # speed and price used by the planner
    data_dir: pathlib.Path | None = None          # dataset directory (only `qpart` tools need it)
    # security
    tls_cert: pathlib.Path | None = None          # server certificate chain (PEM); with tls_key, serve TLS only
    tls_key: pathlib.Path | None = None           # its private key (PEM)
    tls_client_ca: pathlib.Path | None = None     # CA (PEM) that signs device certificates: mutual TLS, required
    devices: pathlib.Path | None = None           # devices file (see qpart.server.auth): bearer tokens, required
    # load
    compute_slots: int = 0                        # batches running the tail at once; 0: one per CPU core
    max_queued: int = 64                          # batches waiting for a slot; more get RESOURCE_EXHAUSTED at once
    max_streams: int = 0                          # concurrent RPCs; more get RESOURCE_EXHAUSTED; 0: workers - 8
    # observability
    metrics_port: int = 0                         # Prometheus /metrics on this port (0: off)
    metrics_host: str = "127.0.0.1"               # address of the metrics endpoint
    json_logs: bool = False                       # one JSON object per log line, with request ids
