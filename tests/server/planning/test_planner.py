"""The planner's rules (paper Algorithm 2 and the baselines) on a synthetic served model: no trained model, a
catalog whose certified drops the tests set (tests/server/planning/synthetic.py). What the real catalogs give
is tested in tests/server/calibration/test_catalog_plans.py."""
import dataclasses

import pytest

from qpart.common import profiles
from qpart.common.costmodel import LinkProfile, Objective
from qpart.common.errors import FailedPrecondition, InvalidArgument, NotFound
from qpart.server.models.heads import HeadStore
from qpart.server.models.repository import ModelRepository
from qpart.server.models.split import Split
from qpart.server.planning import planner
from qpart.server.planning.patterns import CodecCosts, ModelSpeed
from qpart.server.planning.planner import PlanRequest
from qpart.server.planning.served import ServedModels
from tests.server.planning import synthetic

RPI4 = profiles.load_device("rpi4")
SLOW = profiles.load_device("paper-table2")       # 40 MMAC/s


@pytest.fixture(scope="module")
def served():
    return synthetic.served()


def request(**kw) -> PlanRequest:
    base = dict(model=synthetic.NAME, device=RPI4, link=LinkProfile(rate_bps=5e6, rtt_s=0.01), accuracy_budget=1.0)
    return PlanRequest(**(base | kw))


def test_each_baseline_keeps_to_its_own_splits(served):
    n = served.model.num_nodes
    assert planner.plan(served, request(policy="server_only")).spec.split.cut == 0
    device_only = planner.plan(served, request(policy="device_only")).spec.split
    assert device_only.cut == n and set(device_only.weight_bits) == {32}
    assert set(planner.plan(served, request(policy="float_split")).spec.split.bits) <= {32}
    assert set(planner.plan(served, request(policy="uniform_int8")).spec.split.bits) <= {8}


def test_the_budget_rules_out_what_is_certified_above_it(served):
    fewest = Split(synthetic.MID, (3, 2), (2,))                     # certified at 0.9 points
    ask = request(explain=True, link=LinkProfile(rate_bps=1e4, rtt_s=0.0), policy="qpart")
    loose = {c.spec.split: c for c in planner.plan(served, ask).candidates}
    tight_plan = planner.plan(served, dataclasses.replace(ask, accuracy_budget=0.5))
    tight = {c.spec.split: c for c in tight_plan.candidates}
    assert not loose[fewest].rejected and "exceeds the budget 0.5" in tight[fewest].rejected
    assert {s for s, c in tight.items() if c.rejected} == {s for s, c in tight.items() if c.accuracy_drop > 0.5}
    assert tight_plan.chosen.accuracy_drop <= 0.5
    lossless = planner.plan(served, dataclasses.replace(ask, accuracy_budget=0.0))
    assert lossless.chosen.accuracy_drop == 0.0 and set(lossless.chosen.spec.split.bits) <= {32}
    with pytest.raises(FailedPrecondition, match="certified within 0.01 points"):
        planner.plan(served, request(policy="uniform_int8", accuracy_budget=0.01))


def test_memory_the_device_lacks_rules_a_split_out_by_name(served):
    roomy = planner.plan(served, request(inferences_per_head=10 ** 6, device=SLOW))
    assert roomy.spec.split.cut > 0
    small = dataclasses.replace(SLOW, memory_bytes=roomy.chosen.memory_bytes - 1)
    tight = planner.plan(served, request(inferences_per_head=10 ** 6, device=small, explain=True))
    assert tight.chosen.memory_bytes < roomy.chosen.memory_bytes
    assert any("bytes of device memory" in c.rejected for c in tight.candidates)
    with pytest.raises(FailedPrecondition, match="fits 1 bytes"):
        planner.plan(served, request(device=dataclasses.replace(RPI4, memory_bytes=1), policy="device_only"))


def test_a_held_head_ships_for_free_and_reuse_spreads_its_download(served):
    slow_link = request(link=LinkProfile(rate_bps=1e5, rtt_s=0.01), policy="device_only")
    once = planner.plan(served, slow_link).chosen
    reused = planner.plan(served, dataclasses.replace(slow_link, inferences_per_head=1000)).chosen
    held = planner.plan(served, dataclasses.replace(slow_link, held_heads=frozenset({once.head_hash}))).chosen
    assert once.costs.downlink_time_s > reused.costs.downlink_time_s > held.costs.downlink_time_s
    assert held.held and not once.held and held.costs.rtt_time_s == 0.0


def test_explain_lists_each_split_once_and_the_cheapest_eligible_is_chosen(served):
    plan = planner.plan(served, request(explain=True, accuracy_budget=0.5, objective=Objective(1, 0, 0)))
    assert len(plan.candidates) == len({e.split for e in served.catalog.entries})   # uniform8 = qpart at 8 bits once
    assert sum(c.chosen for c in plan.candidates) == 1
    eligible = [c for c in plan.candidates if not c.rejected]
    assert plan.chosen.costs.total_time_s == min(c.costs.total_time_s for c in eligible)


def test_the_plan_says_why_in_one_line(served):
    n = served.model.num_nodes
    plan = planner.plan(served, request(accuracy_budget=0.5))
    assert plan.decision_s > 0 and "\n" not in plan.reason
    cut = plan.spec.split.cut
    assert plan.reason.startswith({0: "sending the input", n: "all on the device"}.get(cut, f"cut {cut} of {n}"))
    for other, name in ((0, "sending the input"), (n, "all on the device")):
        assert cut == other or f"; {name}: objective" in plan.reason or f"; {name}: not eligible" in plan.reason
    assert "over the accuracy budget" in plan.reason


def test_fixed_plans_are_priced_and_a_catalog_split_keeps_its_certified_drop(served):
    heads = HeadStore()
    plan = planner.plan(served, request(policy="fixed", fixed=Split(synthetic.MID, (7,), (5,))), heads=heads)
    assert plan.spec.split.weight_bits == (7, 7) and plan.chosen.accuracy_drop is None
    assert plan.chosen.work.head_bytes > 0 and "not certified" in plan.reason
    known = planner.plan(served, request(policy="fixed", fixed=Split(synthetic.MID, (6, 5), (6,))), heads=heads)
    assert known.chosen.accuracy_drop == pytest.approx(0.3) and "certified at 0.30" in known.reason
    with pytest.raises(InvalidArgument, match="weight bit width"):
        planner.plan(served, request(policy="fixed", fixed=Split(synthetic.MID, (6, 6, 6), (5,))), heads=heads)


def test_the_servers_timings_steer_the_choice():
    n = synthetic.model().num_nodes
    ask = request(device=SLOW, objective=Objective(1, 0, 0), link=LinkProfile(rate_bps=100e6, rtt_s=0.0),
                  inferences_per_head=1000)
    cuts = []
    for seconds in (1e-5, 1.0):     # a fast server, then one whose every tail takes a second
        speed = ModelSpeed({c: seconds for c in (0, synthetic.MID)} | {n: 0.0})
        served = synthetic.served(speed=speed)
        assert planner.plan(served, request(policy="server_only")).chosen.costs.server_time_s == pytest.approx(seconds)
        cuts.append(planner.plan(served, ask).spec.split.cut)
    assert cuts[0] < n and cuts[1] == n                  # a slow server sends the work to the device


def test_preprocessing_timed_on_the_server_adds_to_every_device_time():
    codec = CodecCosts({}, mac_rate=1e10)
    ask = request(explain=True)
    times = []
    for seconds in (0.0, 1e-3):
        served = synthetic.served(speed=ModelSpeed({}, seconds), codec=codec)
        times.append({(c.spec.split, c.coding): c.costs.device_time_s for c in planner.plan(served, ask).candidates})
    extra = 1e-3 * 1e10 / RPI4.mac_rate
    assert all(times[1][k] - times[0][k] == pytest.approx(extra) for k in times[0])


def test_a_busy_server_prices_its_part_higher(served):
    idle = planner.plan(served, request(policy="server_only"))
    busy = planner.plan(served, request(policy="server_only"), load=3.0)
    assert busy.load == 3.0 and busy.chosen.costs.server_time_s == pytest.approx(3 * idle.chosen.costs.server_time_s)


def test_served_models_price_a_repositorys_models_and_refuse_what_they_lack(tmp_path):
    models = ServedModels(ModelRepository(tmp_path))
    with pytest.raises(NotFound):
        models.plan(request())
