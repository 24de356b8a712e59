"""Protobuf <-> core types for the server's RPCs."""
from qpart.common import messages, policies, quant
from qpart.common.costmodel import DeviceProfile, LinkProfile
from qpart.server.models.repository import Model
from qpart.server.models.split import Split
from qpart.server.planning.planner import Candidate, Plan, PlanRequest
from qpart.server.serving.core import HeadChunk, InferResult
from qpart.v1 import network_pb2 as npb
from qpart.v1 import service_pb2 as spb

GRANULARITY_FROM_PB = {npb.GRANULARITY_UNSPECIFIED: quant.PER_TENSOR, npb.PER_TENSOR: quant.PER_TENSOR,
                       npb.PER_CHANNEL: quant.PER_CHANNEL}
GRANULARITY_TO_PB = {quant.PER_TENSOR: npb.PER_TENSOR, quant.PER_CHANNEL: npb.PER_CHANNEL}


def model_info(model: Model, catalog=None) -> spb.ModelInfo:
    card = model.card
    info = spb.ModelInfo(
        name=model.name, version=model.version, description=card.get("description", ""),
        input_shape=model.profile.input_shape, num_classes=model.profile.num_classes,
        class_names=card.get("class_names", []), float_test_accuracy=card.get("float_test_accuracy", 0.0),
        test_samples=card.get("test_samples", 0), dataset=card.get("dataset", ""))
    for layer in model.profile.layers:
        info.layers.add(index=layer.index, name=layer.name, kind=layer.kind, weight_count=layer.weight_count,
                        macs=layer.macs, input_shape=layer.input_shape, output_shape=layer.output_shape)
    if catalog is not None:
        info.has_catalog = True
        info.catalog_budgets.extend(catalog.budgets)
    return info


def plan_request(msg: spb.PlanRequest) -> PlanRequest:
    fixed = None
    if msg.HasField("fixed"):
        f = msg.fixed
        fixed = Split(f.partition_point, tuple(f.weight_bits), f.activation_bits,
                      GRANULARITY_FROM_PB.get(f.weight_granularity, quant.PER_TENSOR))
    return PlanRequest(
        model=msg.model,
        device=messages.device_from_pb(msg.device) if msg.HasField("device") else DeviceProfile(),
        link=messages.link_from_pb(msg.link) if msg.HasField("link") else LinkProfile(),
        accuracy_budget=msg.accuracy_budget, objective=messages.objective_from_pb(msg.weights),
        inferences_per_head=msg.inferences_per_head or 1, held_heads=frozenset(msg.held_heads),
        policy=policies.from_enum(msg.policy), fixed=fixed, explain=msg.explain)


def _prediction(c: Candidate) -> spb.PlanPrediction:
    k = c.costs
    return spb.PlanPrediction(
        device_time_s=k.device_time_s, uplink_time_s=k.uplink_time_s, downlink_time_s=k.downlink_time_s,
        server_time_s=k.server_time_s, rtt_time_s=k.rtt_time_s, total_time_s=k.total_time_s,
        device_energy_j=k.device_energy_j, tx_energy_j=k.tx_energy_j, server_cost=k.server_cost,
        objective=k.objective, accuracy_drop=c.accuracy_drop if c.accuracy_drop is not None else 0.0,
        head_bytes=int(c.work.head_bytes), uplink_bytes=int(c.work.uplink_bytes), device_memory_bytes=c.memory_bytes)


def plan_response(plan: Plan, num_layers: int) -> spb.PlanResponse:
    spec, split = plan.spec, plan.spec.split
    activation = spb.ActivationEncoding(bits=split.activation_bits, sample_shape=plan.sample_shape)
    if plan.activation is not None:
        activation.scale = float(plan.activation.scale[0])
        activation.zero_point = int(plan.activation.zero_point[0])
    msg = spb.PlanResponse(
        plan_id=spec.token(), model=spec.model, model_version=spec.version, policy=policies.to_enum(plan.policy),
        partition_point=split.partition_point, num_layers=num_layers, weight_bits=split.weight_bits,
        weight_granularity=GRANULARITY_TO_PB[split.granularity], activation=activation,
        head_hash=plan.chosen.head_hash, head_bytes=int(plan.chosen.work.head_bytes), predicted=_prediction(plan.chosen))
    for c in plan.candidates:
        s = c.spec.split
        msg.candidates.add(partition_point=s.partition_point, weight_bits=s.weight_bits,
                           activation_bits=s.activation_bits, predicted=_prediction(c), chosen=c.chosen,
                           rejected_reason=c.rejected, kind=c.kind)
    return msg


def head_chunk(chunk: HeadChunk) -> spb.HeadChunk:
    return spb.HeadChunk(content_hash=chunk.content_hash, total_bytes=chunk.total_bytes, offset=chunk.offset,
                         data=chunk.data)


def infer_response(result: InferResult) -> spb.InferResponse:
    msg = spb.InferResponse(server_compute_s=result.compute_s, server_queue_s=result.queue_s)
    for request_id, scores, label in zip(result.request_ids, result.scores, result.labels):
        msg.results.add(request_id=request_id, scores=scores.tolist(), label=int(label))
    return msg
