"""Protobuf <-> core types for the server's RPCs."""
import re

from qpart.common import messages, network, policies, quant, sampling
from qpart.common.costmodel import DeviceProfile, LinkProfile
from qpart.common.errors import InvalidArgument
from qpart.common.names import shown
from qpart.server.models.repository import Model
from qpart.server.models.split import Split
from qpart.server.planning import generation
from qpart.server.planning.planner import MAX_HELD_HEADS, Candidate, Plan, PlanRequest
from qpart.server.serving.core import HeadChunk, InferResult
from qpart.server.serving.generation import Answer, Run
from qpart.server.serving.settings import ServerSettings
from qpart.v1 import network_pb2 as npb
from qpart.v1 import service_pb2 as spb

DEADLINE_EXCEEDED = 4     # the gRPC status code of a shed batch (InferResponse.status_code)

GRANULARITY_FROM_PB = {npb.GRANULARITY_UNSPECIFIED: quant.PER_TENSOR, npb.PER_TENSOR: quant.PER_TENSOR,
                       npb.PER_CHANNEL: quant.PER_CHANNEL}
GRANULARITY_TO_PB = {quant.PER_TENSOR: npb.PER_TENSOR, quant.PER_CHANNEL: npb.PER_CHANNEL}


def limits(settings: ServerSettings) -> spb.ServerLimits:
    return spb.ServerLimits(max_message_bytes=settings.max_message_bytes, max_batch_inputs=settings.max_batch,
                            max_batch_elements=settings.max_activation_elements,
                            max_chunk_bytes=settings.head_chunk_bytes, min_chunk_bytes=settings.min_chunk_bytes,
                            max_tail_elements=settings.max_tail_elements, max_cut_tensors=network.MAX_CUT_TENSORS,
                            max_generation_sessions=settings.generation_sessions,
                            max_generation_sessions_per_client=settings.generation_sessions_per_client,
                            max_generation_positions=settings.generation_positions,
                            max_session_cache_bytes=settings.session_cache_bytes,
                            max_generation_cache_bytes=settings.generation_cache_bytes,
                            generation_idle_s=settings.generation_idle_s, max_draft_tokens=settings.max_draft_tokens,
                            stream_idle_s=settings.stream_idle_s)


def model_info(model: Model, catalog=None) -> spb.ModelInfo:
    card, profile = model.card, model.profile
    info = spb.ModelInfo(
        name=model.name, version=model.version, description=card.get("description", ""),
        input=spb.TensorInfo(name=profile.input_name, shape=profile.input_shape), task=card.get("task", ""),
        class_names=card.get("class_names", []), preprocessing=messages.preprocessing_to_pb(model.preprocessing),
        float_test_accuracy=round(card.get("float_test_accuracy", 0.0), 2), test_samples=card.get("test_samples", 0),
        dataset=card.get("dataset", ""))
    if profile.sequence is not None:
        info.sequence.vocab_size, info.sequence.max_positions = profile.sequence
        info.tokenizer = card.get("tokenizer", {}).get("kind", "")
    info.outputs.extend(spb.TensorInfo(name=o, shape=s) for o, s in zip(profile.outputs, profile.output_shapes))
    for node in profile.nodes:
        info.nodes.add(name=node.name, op=node.op, inputs=node.inputs, output_shape=node.shape, macs=node.macs,
                       weight_count=node.weight_count)
    in_catalog = set(catalog.cuts) if catalog is not None else set()
    for cut in model.cuts():
        info.cuts.add(cut=cut.cut, tensors=[spb.TensorInfo(name=n, shape=s) for n, s in zip(cut.tensors, cut.shapes)],
                      weight_nodes=[profile.nodes[i].name for i in cut.weight_nodes], device_macs=cut.device_macs,
                      in_catalog=cut.cut in in_catalog)
    if catalog is not None:
        info.has_catalog = True
        info.catalog_budgets.extend(catalog.budgets)
    return info

_SHA256 = re.compile(r"[0-9a-f]{64}")


def plan_request(msg: spb.PlanRequest) -> PlanRequest:
    if len(msg.held_heads) > MAX_HELD_HEADS:
        raise InvalidArgument(f"held_heads lists {len(msg.held_heads)} hashes; at most {MAX_HELD_HEADS} are read")
    for i, digest in enumerate(msg.held_heads):
        if not _SHA256.fullmatch(digest):
            raise InvalidArgument(f"held_heads[{i}] {shown(digest)} is not a SHA-256 digest (64 lowercase hex characters)")
    fixed = None
    if msg.HasField("fixed"):
        f = msg.fixed
        fixed = Split(f.cut, tuple(f.weight_bits), tuple(f.activation_bits),
                      GRANULARITY_FROM_PB.get(f.weight_granularity, quant.PER_TENSOR))
    return PlanRequest(
        model=msg.model,
        device=messages.device_from_pb(msg.device) if msg.HasField("device") else DeviceProfile(),
        link=messages.link_from_pb(msg.link) if msg.HasField("link") else LinkProfile(),
        accuracy_budget=msg.accuracy_budget, objective=messages.objective_from_pb(msg.weights),
        inferences_per_head=msg.inferences_per_head or 1, held_heads=frozenset(msg.held_heads),
        policy=policies.from_enum(msg.policy), fixed=fixed, explain=msg.explain,
        generation=generation.Shape(msg.generation.prompt_tokens, msg.generation.new_tokens,
                                    msg.generation.temperature) if msg.HasField("generation") else None)


def _prediction(c: Candidate) -> spb.PlanPrediction:
    k = c.costs
    prediction = spb.PlanPrediction(
        device_time_s=k.device_time_s, uplink_time_s=k.uplink_time_s, downlink_time_s=k.downlink_time_s,
        server_time_s=k.server_time_s, rtt_time_s=k.rtt_time_s, total_time_s=k.total_time_s,
        device_energy_j=k.device_energy_j, tx_energy_j=k.tx_energy_j, server_cost=k.server_cost,
        objective=k.objective, head_bytes=0 if c.held else int(c.work.head_bytes), uplink_bytes=int(c.work.uplink_bytes),
        device_memory_bytes=c.memory_bytes)
    if c.accuracy_drop is not None:
        prediction.accuracy_drop = c.accuracy_drop
    return prediction


def plan_response(plan: Plan, model: Model, plan_id: str, max_batch_inputs: int, expires_at: int,
                  draft_plan_id: str = "") -> spb.PlanResponse:
    spec, split = plan.spec, plan.spec.split
    cut = model.profile.cut(split.cut)
    msg = spb.PlanResponse(
        plan_id=plan_id, model=spec.model, model_version=spec.version, policy=policies.to_enum(plan.policy),
        cut=split.cut, num_nodes=model.num_nodes, weight_nodes=[model.profile.nodes[i].name for i in cut.weight_nodes],
        weight_bits=split.weight_bits, weight_granularity=GRANULARITY_TO_PB[split.granularity],
        head_hash=plan.chosen.head_hash, head_bytes=int(plan.chosen.work.head_bytes), predicted=_prediction(plan.chosen),
        reason=plan.reason, decision_seconds=plan.decision_s, max_batch_inputs=max_batch_inputs,
        plan_id_expires_at=expires_at, server_load=plan.load, server_speed=server_speed(plan, model))
    if plan.generation is not None:
        msg.generation.prompt_tokens, msg.generation.new_tokens = plan.generation.prompt, plan.generation.new
        msg.generation.temperature = plan.generation.temperature
    draft = plan.chosen.draft
    if draft is not None:
        msg.drafting.CopyFrom(spb.DraftPlan(
            model=draft.option.draft.name, model_version=draft.option.draft.version, plan_id=draft_plan_id,
            head_hash=plan.chosen.head_hash, head_bytes=int(plan.chosen.work.head_bytes),
            weight_bits=draft.option.split.weight_bits[0], draft_tokens=draft.k, acceptance=draft.acceptance,
            tokens_per_round=draft.tokens_per_round, measured_positions=draft.option.positions))
        msg.head_hash, msg.head_bytes = "", 0          # the target's plan ships no head: the draft's is above
    for (name, shape, quantizer), bits in zip(plan.activations, split.activation_bits):
        encoding = msg.activations.add(name=name, bits=bits, sample_shape=shape, coding=plan.chosen.coding,
                                       quality=plan.chosen.quality)
        if quantizer is not None:
            encoding.scale, encoding.zero_point = float(quantizer.scale[0]), int(quantizer.zero_point[0])
    for c in plan.candidates:
        s = c.spec.split
        msg.candidates.add(cut=s.cut, weight_bits=c.draft.option.split.weight_bits if c.draft else s.weight_bits,
                           activation_bits=s.activation_bits, predicted=_prediction(c), chosen=c.chosen,
                           rejected_reason=c.rejected, kind=c.kind, coding=c.coding, quality=c.quality,
                           draft_model=c.draft.option.draft.name if c.draft else "",
                           draft_tokens=c.draft.k if c.draft else 0)
    return msg


def server_speed(plan: Plan, model: Model) -> spb.ServerSpeed:
    speed = plan.speed
    if speed is None:
        return spb.ServerSpeed()
    msg = spb.ServerSpeed(macs_per_second=speed.mac_rate.median, macs_spread=speed.mac_rate.spread,
                          busy_while_timed=-1.0 if speed.busy is None else speed.busy, source=speed.source,
                          measured_at=speed.measured_at)
    tail = (speed.tails_for(model) or {}).get(plan.spec.split.cut)
    if tail is not None:
        msg.tail_seconds, msg.tail_spread, msg.tail_runs, msg.tail_refused = (tail.median, tail.spread, tail.samples,
                                                                              tail.refused)
    return msg


def head_chunk(chunk: HeadChunk) -> spb.HeadChunk:
    return spb.HeadChunk(content_hash=chunk.content_hash, total_bytes=chunk.total_bytes, offset=chunk.offset,
                         data=chunk.data)


def batch_tensors(batch: spb.ActivationBatch) -> list[tuple]:
    return [(t.name, tuple(t.sample_shape), t.bits, t.data, t.coding) for t in batch.tensors]


def infer_response(result: InferResult) -> spb.InferResponse:
    msg = spb.InferResponse(server_compute_s=result.compute_s, server_queue_s=result.queue_s)
    if result.shed:
        msg.status_code, msg.status_message = DEADLINE_EXCEEDED, result.shed[:200]
        return msg
    flat = [o.reshape(len(result.request_ids), -1) for o in result.outputs]
    for i, request_id in enumerate(result.request_ids):
        r = msg.results.add(request_id=request_id, outputs=[spb.OutputValues(values=o[i].tolist()) for o in flat])
        if result.labels is not None:
            r.label = int(result.labels[i])
    return msg


def generate_run(msg: spb.GenerateRequest) -> Run:
    return Run(msg.plan_id, msg.session_id, msg.position, [(t.name, tuple(t.sample_shape), t.bits, t.data, t.coding)
                                                          for t in msg.tensors],
               sampling.Sampling(msg.sampling.temperature, msg.sampling.seed) if msg.HasField("sampling") else None,
               max(msg.max_new_tokens, 1), tuple(msg.stop_tokens), msg.close, msg.draft_count, msg.draft_probabilities)


def generate_response(answer: Answer) -> spb.GenerateResponse:
    return spb.GenerateResponse(session_id=answer.session_id, position=answer.position, token=answer.token,
                                server_compute_s=answer.compute_s, cache_bytes=answer.cache_bytes, last=answer.last,
                                closed=answer.closed, accepted=answer.accepted)
