"""The thin gRPC layer: identify the caller, decode, call QpartCore, encode.

Errors map to status codes in qpart.common.rpc; requests are parsed there too, so that bytes that
are not a valid message get INVALID_ARGUMENT. Metrics and logs come from the RpcObserver, which sees
every message; the rules of an Infer stream live in the core. Infer itself is a coroutine on qpart-server's
event loop (qpart.server.serving.aio), which runs these synchronous methods in its thread pool. Every RPC of qpart.v1.SplitInference
identifies its caller first (bearer token, TLS client certificate; see qpart.server.serving.auth).
"""
import time

import grpc

from qpart.common.rpc import servicer_method
from qpart.server.serving import convert
from qpart.server.serving.auth import Identity
from qpart.server.serving.core import QpartCore
from qpart.server.serving.observe import RpcObserver
from qpart.v1 import service_pb2 as spb

SERVICE = spb.DESCRIPTOR.services_by_name["SplitInference"]


class SplitInferenceServicer:
    def __init__(self, core: QpartCore, observer: RpcObserver | None = None):
        self.core = core
        self.observer = observer or RpcObserver()

    @staticmethod
    def _common_names(context: grpc.ServicerContext) -> list[str]:
        """The TLS client certificate's common names (verified only with mutual TLS)."""
        return [v.decode("utf-8", "replace") for v in context.auth_context().get("x509_common_name", [])]

    def _identity(self, context: grpc.ServicerContext) -> Identity:
        identity = self.core.auth.identify(context.invocation_metadata(), self._common_names(context))
        self.observer.annotate(device=identity.device_id)
        return identity

    @servicer_method
    def ListModels(self, request: spb.ListModelsRequest, context: grpc.ServicerContext):
        identity = self._identity(context)
        return spb.ListModelsResponse(models=[convert.model_info(m, self.core.models.get(m.name).catalog)
                                              for m in self.core.list_models(request.name, identity)],
                                      limits=convert.limits(self.core.settings))

    @servicer_method
    def Plan(self, request: spb.PlanRequest, context: grpc.ServicerContext):
        started = time.perf_counter()
        identity = self._identity(context)
        plan = self.core.plan(convert.plan_request(request), identity)
        model = self.core.repository.get(plan.spec.model)
        plan_id = self.core.plan_id(plan)
        response = convert.plan_response(plan, model, plan_id, self.core.max_batch_inputs(model, plan.spec.split),
                                         self.core.signer.expiry(plan_id), self.core.draft_plan_id(plan))
        response.decision_seconds = time.perf_counter() - started     # the whole handling, as the proto says
        return response

    def _stream(self, identity, context: grpc.ServicerContext, cancel=None):
        """A slot among the client's bounded streams, cancelled by the watchdog when idle (see StreamGuard); the
        client is the device's identity where it has one, its address only when anonymous. cancel: what ends the
        stream (default context.cancel; a grpc.aio context has none)."""
        peer = context.peer() or "unknown"
        owner = self.core.auth.stream_owner(identity, peer, self._common_names(context))
        return self.core.streams.open(owner, peer, cancel or context.cancel)

    @servicer_method
    def FetchHead(self, request: spb.FetchHeadRequest, context: grpc.ServicerContext):
        identity = self._identity(context)
        with self._stream(identity, context) as stream:
            for chunk in self.core.head_chunks(request.plan_id, request.offset, request.max_chunk_bytes, identity):
                yield convert.head_chunk(chunk)
                stream.touch()

    @servicer_method
    def Generate(self, requests, context: grpc.ServicerContext):
        identity = self._identity(context)
        with self._stream(identity, context) as guard:
            for request in requests:
                guard.touch()
                for answer in self.core.generation.run(convert.generate_run(request), guard.client, identity):
                    yield convert.generate_response(answer)
                    guard.touch()

    @servicer_method
    def Probe(self, request: spb.ProbeRequest, context: grpc.ServicerContext):
        self._identity(context)
        return spb.ProbeResponse(payload=self.core.probe_reply(request.reply_bytes), received_bytes=len(request.payload))

    @servicer_method
    def ProbeStream(self, requests, context: grpc.ServicerContext):
        with self._stream(self._identity(context), context) as guard:
            for request in requests:
                guard.touch()
                yield spb.ProbeResponse(payload=self.core.probe_reply(request.reply_bytes),
                                        received_bytes=len(request.payload))
                guard.touch()
