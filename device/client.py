"""The device's gRPC client: deadlines on every call, QpartError instead of grpc.RpcError, and an
exact count of the gRPC message bytes each RPC moved (serialized message plus its 5-byte frame)."""
import collections
import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Iterable, Iterator

import grpc

from qpart.common.errors import DataLoss, ResourceExhausted
from qpart.common.rpc import rpc_errors, translate_stream
from qpart.v1 import service_pb2 as spb
from qpart.v1 import service_pb2_grpc

GRPC_FRAME_BYTES = 5   # compressed flag + 4-byte length before every gRPC message


@dataclass
class WireBytes:
    sent: int = 0        # bytes of gRPC messages sent, frames included
    received: int = 0    # bytes of gRPC messages received, frames included


def message_bytes(message) -> int:
    return message.ByteSize() + GRPC_FRAME_BYTES


class ServerClient:
    def __init__(self, target: str, timeout_s: float = 30.0, max_message_bytes: int = 16 << 20,
                 channel: grpc.Channel | None = None):
        self.target = target
        self.port = int(target.rsplit(":", 1)[1]) if ":" in target else 443
        self.timeout_s = timeout_s   # deadline of unary calls; streams get it per expected second of work
        self.channel = channel or grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)])
        self.stub = service_pb2_grpc.SplitInferenceStub(self.channel)
        self.bytes: dict[str, WireBytes] = collections.defaultdict(WireBytes)

    def close(self) -> None:
        self.channel.close()

    def wait_ready(self, timeout_s: float = 10.0) -> None:
        with rpc_errors():
            grpc.channel_ready_future(self.channel).result(timeout=timeout_s)

    def _unary(self, name: str, method, request):
        self.bytes[name].sent += message_bytes(request)
        with rpc_errors():
            response = method(request, timeout=self.timeout_s)
        self.bytes[name].received += message_bytes(response)
        return response

    def list_models(self, name: str = "") -> list[spb.ModelInfo]:
        return list(self._unary("ListModels", self.stub.ListModels, spb.ListModelsRequest(name=name)).models)

    def plan(self, request: spb.PlanRequest) -> spb.PlanResponse:
        return self._unary("Plan", self.stub.Plan, request)

    def probe(self, payload_bytes: int, reply_bytes: int) -> spb.ProbeResponse:
        return self._unary("Probe", self.stub.Probe, spb.ProbeRequest(payload=bytes(payload_bytes),
                                                                      reply_bytes=reply_bytes))

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
        trips = []
        for response in translate_stream(self.stub.ProbeStream(requests(), timeout=self.timeout_s)):
            trips.append(time.perf_counter() - sent_at[len(trips)])
            counter.received += message_bytes(response)
            answered.release()
        return trips

    def fetch_head(self, plan: spb.PlanResponse, max_bytes: int, timeout_s: float | None = None) -> bytes:
        """Download the plan's head, checking every chunk against the plan before storing it."""
        total = plan.head_bytes
        if total > max_bytes:
            raise ResourceExhausted(f"the head takes {total} bytes; this device allows {max_bytes}")
        counter = self.bytes["FetchHead"]
        request = spb.FetchHeadRequest(plan_id=plan.plan_id)
        counter.sent += message_bytes(request)
        buffer = bytearray(total)
        received = 0
        call = self.stub.FetchHead(request, timeout=timeout_s or self.timeout_s)
        for chunk in translate_stream(call):
            counter.received += message_bytes(chunk)
            if chunk.content_hash != plan.head_hash or chunk.total_bytes != total:
                raise DataLoss("a head chunk names another head than the plan does")
            if chunk.offset != received or received + len(chunk.data) > total or not chunk.data:
                raise DataLoss(f"head chunk at offset {chunk.offset} (+{len(chunk.data)}) does not continue "
                               f"the {received} bytes received of {total}")
            buffer[received:received + len(chunk.data)] = chunk.data
            received += len(chunk.data)
        if received != total:
            raise DataLoss(f"the head stream ended after {received} of {total} bytes")
        data = bytes(buffer)
        if hashlib.sha256(data).hexdigest() != plan.head_hash:
            raise DataLoss("the downloaded head does not match its content hash")
        return data

    def infer(self, requests: Iterable[spb.InferRequest], timeout_s: float | None = None) -> Iterator[spb.InferResponse]:
        counter = self.bytes["Infer"]

        def counted():
            for request in requests:
                counter.sent += message_bytes(request)
                yield request
        for response in translate_stream(self.stub.Infer(counted(), timeout=timeout_s or self.timeout_s)):
            counter.received += message_bytes(response)
            yield response

    def totals(self) -> WireBytes:
        return WireBytes(sum(b.sent for b in self.bytes.values()), sum(b.received for b in self.bytes.values()))

