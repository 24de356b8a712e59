"""The device's gRPC client.

- Every call has a deadline; errors come back as QpartError subclasses, never grpc.RpcError.
- Several server addresses ("a:50051,b:50051"): when one is UNAVAILABLE the client moves to the
  next, backing off exponentially with jitter; unary calls are retried, a head download resumes from
  the byte it had reached, a head whose content hash does not match is downloaded again. Infer
  streams are not retried here: the agent resends exactly the inputs that have no answer yet.
- TLS (trusting a given CA), mutual TLS (this device's certificate) and a bearer token on every call.
- Exact gRPC message byte counts per RPC (serialized message plus its 5-byte frame).
"""
import collections
import hashlib
import itertools
import pathlib
import random
import threading
import time
import uuid
import weakref
from dataclasses import dataclass
from typing import Iterable, Iterator

import grpc

from qpart.common.errors import DataLoss, InvalidArgument, ResourceExhausted, Unauthenticated, Unavailable
from qpart.common import tls as tls_probe
from qpart.common.rpc import rpc_errors
from qpart.common.tls import speaks_tls
from qpart.v1 import service_pb2 as spb
from qpart.v1 import service_pb2_grpc

GRPC_FRAME_BYTES = 5   # compressed flag + 4-byte length before every gRPC message


@dataclass
class WireBytes:
    sent: int = 0        # bytes of gRPC messages sent, frames included
    received: int = 0    # bytes of gRPC messages received, frames included


@dataclass(frozen=True)
class TlsSettings:
    ca: pathlib.Path | None = None          # CA certificate (PEM) the server's certificate must chain to
    cert: pathlib.Path | None = None        # this device's certificate chain (PEM), for mutual TLS
    key: pathlib.Path | None = None         # its private key (PEM)
    server_name: str | None = None          # expected name in the server certificate, if not the host

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise InvalidArgument("a device certificate needs both --tls-cert and --tls-key")
        read = lambda path: path.read_bytes() if path else None  # noqa: E731
        return grpc.ssl_channel_credentials(read(self.ca), read(self.key), read(self.cert))


def diagnose_tls(target: str, tls: TlsSettings, timeout_s: float = 3.0) -> str | None:
    """Why a TLS connection to `target` fails, if it is TLS: the server does not speak TLS, its certificate is not
    trusted, or it refused this device's certificate (gRPC reports a refused client certificate only as a closed
    socket, so the handshake is repeated with the same files: qpart.common.tls). None when TLS is not the problem
    (the server accepts us, or cannot be reached at all)."""
    return tls_probe.diagnose(target, tls.ca, tls.cert, tls.key, tls.server_name, timeout_s)


def message_bytes(message) -> int:
    return message.ByteSize() + GRPC_FRAME_BYTES


class ServerClient:
    def __init__(self, target: str, timeout_s: float = 30.0, max_message_bytes: int = 16 << 20,
                 token: str | None = None, tls: TlsSettings | None = None, retries: int = 6,
                 backoff_s: float = 0.1, backoff_max_s: float = 2.0, own_connection: bool = False):
        """own_connection: a TCP connection of this client's own (gRPC otherwise shares one between the channels
        of a process that dial the same address with the same options): one per emulated device, so that each
        has its own link."""
        self.targets = [t.strip() for t in target.split(",") if t.strip()]
        if not self.targets:
            raise InvalidArgument("no server address given")
        self.timeout_s = timeout_s            # deadline of unary calls; streams get it plus their expected work
        self.retries = retries                # attempts after the first when a server is UNAVAILABLE
        self.backoff_s, self.backoff_max_s = backoff_s, backoff_max_s
        self._auth = (("authorization", f"Bearer {token}"),) if token else ()
        self._session = uuid.uuid4().hex[:8]       # request ids: <session>-<call number>, in the server's logs
        self._calls = itertools.count(1)
        self.max_message_bytes = max_message_bytes
        self._options = [("grpc.max_receive_message_length", max_message_bytes),
                         ("grpc.max_send_message_length", max_message_bytes)]
        if own_connection:
            self._options.append(("grpc.use_local_subchannel_pool", 1))
        if target.startswith("dns:"):      # every address DNS gives (a headless Service's pods), in turn
            self._options.append(("grpc.lb_policy_name", "round_robin"))
        self._tls = tls
        if tls is not None and tls.server_name:
            self._options.append(("grpc.ssl_target_name_override", tls.server_name))
        self._channels: dict[str, grpc.Channel] = {}
        self._current = 0
        self.failovers = 0          # moves to another address after UNAVAILABLE
        self.refetches = 0          # heads downloaded again because they failed their content hash
        self.bytes: dict[str, WireBytes] = collections.defaultdict(WireBytes)
        self.open_streams: weakref.WeakSet = weakref.WeakSet()   # long-lived streams (InferChannel) to end at close

    # --- channels and failover ---------------------------------------------------------------------
    @property
    def metadata(self) -> tuple:
        """Metadata of the next call: the token, and a fresh request id that the server logs."""
        return self._auth + (("x-request-id", f"{self._session}-{next(self._calls)}"),)

    @property
    def target(self) -> str:
        return self.targets[self._current]

    @property
    def port(self) -> int:
        return int(self.target.rsplit(":", 1)[1]) if ":" in self.target else 443

    @property
    def channel(self) -> grpc.Channel:
        target = self.target
        if target not in self._channels:
            self._channels[target] = (grpc.secure_channel(target, self._tls.credentials(), self._options)
                                      if self._tls is not None else grpc.insecure_channel(target, self._options))
        return self._channels[target]

    @property
    def stub(self) -> service_pb2_grpc.SplitInferenceStub:
        return service_pb2_grpc.SplitInferenceStub(self.channel)

    def failover(self, attempt: int) -> None:
        """Move to the next address (if there are several) and back off before the next attempt."""
        if len(self.targets) > 1:
            self._current = (self._current + 1) % len(self.targets)
            self.failovers += 1
        delay = min(self.backoff_s * 2 ** attempt, self.backoff_max_s)
        time.sleep(delay * random.uniform(0.5, 1.0))

    def close(self) -> None:
        """Half-close the long-lived streams on this client (their answers still come, for a few seconds at most),
        then close its connections."""
        for stream in list(self.open_streams):
            stream.close(wait_s=2.0)
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def __enter__(self) -> "ServerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def with_failover(self, call, on_retry=None):
        """call() until it returns, retrying on UNAVAILABLE: each retry moves to the next address and backs
        off (see failover); a refused TLS handshake is raised as Unauthenticated at once; after `retries`
        retries the last Unavailable is raised. on_retry() runs before each retry."""
        for attempt in range(self.retries + 1):
            try:
                with rpc_errors():
                    return call()
            except Unavailable:
                self.check_tls()
                if attempt == self.retries:
                    raise
                if on_retry is not None:
                    on_retry()
                self.failover(attempt)

    def check_tls(self) -> None:
        """After a failed connection: raise Unauthenticated if the certificates are why, or if the server speaks
        TLS and this client does not (never retried)."""
        if self._tls is None:
            if speaks_tls(self.target):
                raise Unauthenticated(f"{self.target}: {tls_probe.SPEAKS_TLS}")
        else:
            reason = diagnose_tls(self.target, self._tls)
            if reason:
                raise Unauthenticated(f"{self.target}: {reason}")

    # --- calls -----------------------------------------------------------------------------------------
    def _unary(self, name: str, request):
        def call():
            self.bytes[name].sent += message_bytes(request)
            response = getattr(self.stub, name)(request, timeout=self.timeout_s, metadata=self.metadata)
            self.bytes[name].received += message_bytes(response)
            return response
        return self.with_failover(call)

    def list_models(self, name: str = "") -> list[spb.ModelInfo]:
        return list(self._unary("ListModels", spb.ListModelsRequest(name=name)).models)

    def limits(self) -> spb.ServerLimits:
        """The server's limits (batch inputs, message and chunk sizes), from ListModels."""
        return self._unary("ListModels", spb.ListModelsRequest()).limits

    def plan(self, request: spb.PlanRequest) -> spb.PlanResponse:
        return self._unary("Plan", request)

    def probe(self, payload_bytes: int, reply_bytes: int) -> spb.ProbeResponse:
        return self._unary("Probe", spb.ProbeRequest(payload=bytes(payload_bytes), reply_bytes=reply_bytes))

    def probe_round_trips(self, count: int) -> list[float]:
        """Seconds of each of `count` empty round trips on one ProbeStream, one message in flight at a time."""
        counter = self.bytes["ProbeStream"]
        answered = threading.Semaphore(0)
        sent_at: list[float] = []

        def requests():
            for i in range(count):
                if i and not answered.acquire(timeout=self.timeout_s):
                    return
                message = spb.ProbeRequest()
                counter.sent += message_bytes(message)
                sent_at.append(time.perf_counter())
                yield message

        def call():
            sent_at.clear()
            trips = []
            for response in self.stub.ProbeStream(requests(), timeout=self.timeout_s, metadata=self.metadata):
                trips.append(time.perf_counter() - sent_at[len(trips)])
                counter.received += message_bytes(response)
                answered.release()
            return trips
        return self.with_failover(call)

    def fetch_head(self, plan: spb.PlanResponse, max_bytes: int, timeout_s: float | None = None,
                   refetches: int = 2) -> bytes:
        """Download the plan's head, checking every chunk against the plan before storing it; a broken
        stream resumes where it stopped, a head that fails its content hash is downloaded again."""
        total = plan.head_bytes
        if total > max_bytes:
            raise ResourceExhausted(f"the head takes {total} bytes; this device allows {max_bytes}")
        for refetch in range(refetches + 1):
            buffer = bytearray(total)
            progress = [0]      # bytes received so far: a retry resumes there

            def resume():
                progress[0] = self._fetch_from(plan, buffer, progress, timeout_s)
            self.with_failover(resume)
            data = bytes(buffer)
            if hashlib.sha256(data).hexdigest() == plan.head_hash:
                return data
            if refetch == refetches:
                raise DataLoss(f"the head failed its content hash {refetches + 1} times")
            self.refetches += 1
        raise AssertionError("unreachable")

    def _fetch_from(self, plan: spb.PlanResponse, buffer: bytearray, progress: list[int], timeout_s) -> int:
        """Download from progress[0] on; progress[0] follows every chunk stored, so a broken stream resumes there."""
        counter, total, received = self.bytes["FetchHead"], len(buffer), progress[0]
        request = spb.FetchHeadRequest(plan_id=plan.plan_id, offset=received)
        counter.sent += message_bytes(request)
        with rpc_errors():
            for chunk in self.stub.FetchHead(request, timeout=timeout_s or self.timeout_s, metadata=self.metadata):
                counter.received += message_bytes(chunk)
                if chunk.content_hash != plan.head_hash or chunk.total_bytes != total:
                    raise DataLoss("a head chunk names another head than the plan does")
                if chunk.offset != received or received + len(chunk.data) > total or not chunk.data:
                    raise DataLoss(f"head chunk at offset {chunk.offset} (+{len(chunk.data)}) does not continue "
                                   f"the {received} bytes received of {total}")
                buffer[received:received + len(chunk.data)] = chunk.data
                received += len(chunk.data)
                progress[0] = received
        if received != total:
            raise DataLoss(f"the head stream ended after {received} of {total} bytes")
        return received

    def _stream(self, name: str, requests, timeout_s: float | None):
        counter = self.bytes[name]

        def counted():
            for request in requests:
                counter.sent += message_bytes(request)
                yield request
        with rpc_errors():
            for response in getattr(self.stub, name)(counted(), timeout=timeout_s or self.timeout_s,
                                                     metadata=self.metadata):
                counter.received += message_bytes(response)
                yield response

    def infer(self, requests: Iterable[spb.InferRequest], timeout_s: float | None = None) -> Iterator[spb.InferResponse]:
        """One Infer stream on the current server; UNAVAILABLE is raised for the caller to resend."""
        return self._stream("Infer", requests, timeout_s)

    def generate(self, requests: Iterable[spb.GenerateRequest], timeout_s: float | None = None
                 ) -> Iterator[spb.GenerateResponse]:
        """One Generate stream on the current server (qpart.device.generation); errors are raised as QpartError."""
        return self._stream("Generate", requests, timeout_s)
