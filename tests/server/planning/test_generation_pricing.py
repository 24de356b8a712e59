"""A language model's plans are priced per generation: a split pays a round trip per token, sending the prompt
one; the device's cache counts against its memory; the choice follows the link, the device and the price."""
import pytest

from qpart.common.costmodel import DeviceProfile, LinkProfile, Objective
from qpart.common.errors import InvalidArgument
from qpart.common.kvcache import cache_bytes_per_position
from qpart.server.models.repository import ModelRepository
from qpart.server.models.split import Split
from qpart.server.planning import generation
from qpart.server.planning.planner import PlanRequest
from qpart.server.planning.served import ServedModels

MODEL = "gpt-fortunes"


@pytest.fixture(scope="module")
def served(lm_models, lm_catalog):
    return ServedModels(ModelRepository(lm_models))


def request(**kw) -> PlanRequest:
    base = dict(model=MODEL, device=DeviceProfile(macs_per_second=2e8), link=LinkProfile(rate_bps=5e6, rtt_s=0.02),
                accuracy_budget=1.0, inferences_per_head=1000, generation=generation.Shape(20, 100))
    return PlanRequest(**(base | kw))


def test_a_split_pays_a_round_trip_per_token_and_sending_the_prompt_one(served):
    shape = generation.Shape(20, 100)
    split = served.plan(request(policy="fixed", fixed=Split(15, (8,), (8,))))
    prompt = served.plan(request(policy="server_only"))
    local = served.plan(request(policy="device_only"))
    assert split.generation == shape and prompt.spec.split.cut == 0 and local.spec.split.cut == 30
    k = split.chosen.costs
    head_share = split.chosen.work.head_bytes > 0 and 1 / 1000
    assert k.rtt_time_s == pytest.approx(0.02 * (100 + head_share))
    assert prompt.chosen.costs.rtt_time_s == pytest.approx(0.02) and local.chosen.costs.rtt_time_s < 0.02 * 0.01
    width = 32                                                       # the residual stream: 32 values a position
    assert split.chosen.work.uplink_bytes == width * (20 + 99) + generation.REQUEST_OVERHEAD_BYTES * 100
    assert prompt.chosen.work.uplink_bytes == 4 * 20 + generation.REQUEST_OVERHEAD_BYTES
    assert local.chosen.work.uplink_bytes == 0 and local.chosen.work.server_seconds == 0


def test_the_device_cache_counts_against_memory(served, lm_models):
    model = ModelRepository(lm_models).get(MODEL)
    short, long = (served.plan(request(policy="device_only", generation=generation.Shape(10, n))) for n in (20, 200))
    per_position = cache_bytes_per_position([n.attention for n in model.spec.nodes if n.WhichOneof("op") == "attention"])
    grown = long.chosen.memory_bytes - short.chosen.memory_bytes
    assert grown >= per_position * 180                                 # 2 blocks' keys and values, float32
    tight = request(device=DeviceProfile(macs_per_second=2e8, memory_bytes=short.chosen.memory_bytes + 1),
                    generation=generation.Shape(10, 200), policy="device_only")
    with pytest.raises(Exception, match="memory"):
        served.plan(tight)


def test_the_choice_follows_the_price_of_the_server_and_the_device(served):
    costly_server = served.plan(request(objective=Objective(time=1, energy=0, cost=1e4)))
    assert costly_server.spec.split.cut > 0              # server seconds priced high: the device does the work
    slow_device = served.plan(request(device=DeviceProfile(macs_per_second=1e5), objective=Objective(1, 0, 0)))
    assert slow_device.spec.split.cut == 0              # a device at 100 kMAC/s: send the prompt
    for plan in (costly_server, slow_device):
        assert plan.chosen.accuracy_drop is not None and plan.chosen.accuracy_drop <= 1.0


def test_a_generation_shape_is_checked(served, repo, catalogs):
    with pytest.raises(InvalidArgument, match="context"):
        served.plan(request(generation=generation.Shape(200, 100)))
    with pytest.raises(InvalidArgument, match="at least one"):
        served.plan(request(generation=generation.Shape(0, 10)))
    with pytest.raises(InvalidArgument, match="not a language model"):
        ServedModels(repo).plan(PlanRequest(model="fc6", generation=generation.Shape(10, 10)))


def test_streamed_tokens_are_priced_as_observed_once_enough_were(lm_models, lm_catalog):
    from qpart.server.planning.patterns import ModelSpeed
    from qpart.server.planning.served import STREAMED_FEWEST
    served = ServedModels(ModelRepository(lm_models))
    model = served.get(MODEL).model
    cuts = [e.split.cut for e in lm_catalog.entries]
    served.set_speed(None, {(MODEL, model.version): ModelSpeed({c: 1e-3 for c in cuts},
                                                               prefill_seconds={c: 2e-3 for c in cuts})})
    shape = generation.Shape(20, 100)
    timed = served.plan(request(policy="server_only", generation=shape)).chosen.costs.server_time_s
    for _ in range(STREAMED_FEWEST - 1):
        served.get(MODEL).observe_streamed_step(4e-3)
    assert served.plan(request(policy="server_only", generation=shape)).chosen.costs.server_time_s == timed
    served.get(MODEL).observe_streamed_step(4e-3)                       # enough: the median prices streaming
    observed = served.plan(request(policy="server_only", generation=shape)).chosen.costs.server_time_s
    assert observed == pytest.approx(timed + 3e-3 * (shape.new - 1))
    split = served.plan(request(policy="fixed", fixed=Split(15, (8,), (8,)), generation=shape))
    assert split.chosen.costs.server_time_s < observed              # a split's steps are not streamed: still timed
