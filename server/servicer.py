"""The thin gRPC layer: decode, call QpartCore, encode. Errors map to status codes in qpart.common.rpc."""
import time

import grpc

from qpart.common.errors import InvalidArgument
from qpart.common.rpc import servicer_method
from qpart.server import codec
from qpart.server.core import QpartCore
from qpart.v1 import service_pb2 as spb
from qpart.v1 import service_pb2_grpc


class SplitInferenceServicer(service_pb2_grpc.SplitInferenceServicer):
    def __init__(self, core: QpartCore):
        self.core = core

    @servicer_method
    def ListModels(self, request: spb.ListModelsRequest, context: grpc.ServicerContext):
        return spb.ListModelsResponse(models=[codec.model_info(m, self.core.planner.catalog(m))
                                              for m in self.core.list_models(request.name)])

    @servicer_method
    def Plan(self, request: spb.PlanRequest, context: grpc.ServicerContext):
        plan = self.core.plan(codec.plan_request(request))
        return codec.plan_response(plan, self.core.repository.get(plan.spec.model).num_layers)

    @servicer_method
    def FetchHead(self, request: spb.FetchHeadRequest, context: grpc.ServicerContext):
        for chunk in self.core.head_chunks(request.plan_id, request.offset, request.max_chunk_bytes):
            yield codec.head_chunk(chunk)

    @servicer_method
    def Infer(self, requests, context: grpc.ServicerContext):
        session = None
        for request in requests:
            received_at = time.perf_counter()
            if session is None:
                session = self.core.open_session(request.plan_id)
            elif request.plan_id and request.plan_id != session.token:
                raise InvalidArgument("the plan id changed within one Infer stream; open a new stream per plan")
            batch = request.batch
            result = self.core.infer(session, batch.request_ids, batch.sample_shape, batch.bits, batch.data,
                                     received_at)
            yield codec.infer_response(result)

    @servicer_method
    def Probe(self, request: spb.ProbeRequest, context: grpc.ServicerContext):
        return spb.ProbeResponse(payload=self.core.probe_reply(request.reply_bytes),
                                 received_bytes=len(request.payload))

    @servicer_method
    def ProbeStream(self, requests, context: grpc.ServicerContext):
        for request in requests:
            yield spb.ProbeResponse(payload=self.core.probe_reply(request.reply_bytes), received_bytes=len(request.payload))
