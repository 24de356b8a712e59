"""What the real catalogs give the planner: mixed precision plans no baseline can, the Plan RPC's prediction,
and measured tails steering the choice. (The planner's own rules are tested on a synthetic model in
tests/server/planning/test_planner.py.)"""
import dataclasses

import pytest

from qpart.common import policies, profiles
from qpart.common.costmodel import LinkProfile, Objective
from qpart.server.planning import image_files
from qpart.server.planning import planner as planner_mod
from qpart.server.planning.patterns import ModelSpeed, catalog_patterns
from qpart.server.planning.planner import PlanRequest
from qpart.server.planning.served import ServedModel, ServedModels
from qpart.v1 import service_pb2 as spb

RPI4 = profiles.load_device("rpi4")


@pytest.fixture(scope="module")
def planner(repo, catalogs):
    return ServedModels(repo)


def request(**kw) -> PlanRequest:
    base = dict(model="vgg8", device=RPI4, link=LinkProfile(rate_bps=5e6, rtt_s=0.01), accuracy_budget=1.0)
    return PlanRequest(**(base | kw))


GRID = [(device, rate, rtt, reuse) for device in ("paper-table2", "rpi4", "jetson-orin-nano")
        for rate, rtt in ((1e6, 0.0), (5e6, 0.01), (20e6, 0.01), (100e6, 0.0)) for reuse in (1, 100)]


def strict_wins(served: ServedModel) -> list[tuple]:
    """Grid cells where QPART's plan is strictly cheaper than every baseline's, with the kind it chose."""
    wins = []
    for device, rate, rtt, reuse in GRID:
        base = request(model=served.name, device=profiles.load_device(device), link=LinkProfile(rate_bps=rate, rtt_s=rtt),
                       inferences_per_head=reuse)
        best = planner_mod.plan(served, base).chosen
        assert best.accuracy_drop <= base.accuracy_budget
        others = [planner_mod.plan(served, dataclasses.replace(base, policy=p)).chosen.costs.objective
                  for p in policies.BASELINES]
        assert best.costs.objective <= min(others) * (1 + 1e-12)      # QPART weighs every baseline's splits too
        if best.costs.objective < min(others) * (1 - 1e-9):
            wins.append((device, rate, reuse, best.kind, best.spec.split.cut))
    return wins


def test_mixed_precision_beats_every_baseline_somewhere(planner):
    """QPART's own patterns (mixed precision at a cut inside the network) make plans no baseline can:
    strictly cheaper than the best baseline in some cells, always with a mixed-precision split."""
    wins = strict_wins(planner.get("vgg8")) + strict_wins(planner.get("fc6"))
    assert len(wins) >= 4, wins
    assert all(kind == "qpart" for *_, kind, _ in wins), wins


def test_without_mixed_precision_qpart_only_ties(repo, catalogs):
    """The check above can fail: a planner whose catalog lost its mixed-precision entries (all but cut 0,
    which server_only uses too) never beats the baselines."""
    model = repo.get("vgg8")
    catalog = dataclasses.replace(catalogs["vgg8"], entries=[e for e in catalogs["vgg8"].entries
                                                             if e.kind != "qpart" or e.split.cut == 0])
    stripped = ServedModel(model, catalog, *catalog_patterns(model, catalog, codecs=image_files.load(model)))
    assert strict_wins(stripped) == []


def test_plan_rpc_carries_the_prediction(client, catalogs):
    response = client.plan(spb.PlanRequest(model="fc6", accuracy_budget=1.0, explain=True))
    assert response.policy == spb.QPART and response.plan_id
    assert response.predicted.HasField("accuracy_drop") and response.predicted.accuracy_drop <= 1.0
    assert response.predicted.total_time_s > 0 and sum(c.chosen for c in response.candidates) == 1
    assert response.reason and 0 < response.decision_seconds < 1
    info = client.list_models("fc6")[0]
    assert info.has_catalog and list(info.catalog_budgets) == catalogs["fc6"].budgets == [0.25, 0.5, 1.0, 2.0]  # 0.1:
    # the test catalog's 3,000 certification images cannot certify it (docs/certification.md)
    fixed = client.plan(spb.PlanRequest(model="fc6", policy=spb.FIXED, fixed=spb.FixedPlan(cut=3, weight_bits=[4],
                                                                                          activation_bits=[4])))
    assert not fixed.predicted.HasField("accuracy_drop")      # priced, never measured: unknown, not 0


def test_measured_tail_times_price_the_server_part(planner, repo, catalogs):
    from qpart.server.serving import speed
    model = repo.get("vgg8")
    cuts = catalogs["vgg8"].cuts
    measured, _ = speed.tail_timings(model, cuts, idle_s=0.001, rounds=3)
    assert set(measured) == set(cuts) - {model.num_nodes}            # all on the device: nothing to time
    assert all(t.median > 0 and t.samples + t.refused == 3 for t in measured.values())
    try:
        for seconds in (1e-4, 1.0):   # a fast server, then one whose every tail takes a second
            planner.set_speed(None, {(model.name, model.version): ModelSpeed(
                {c: seconds if c < model.num_nodes else 0.0 for c in cuts})})
            server_only = planner.plan(request(policy="server_only")).chosen
            assert server_only.costs.server_time_s == pytest.approx(seconds)
            chosen = planner.plan(request(device=profiles.load_device("paper-table2"), objective=Objective(1, 0, 0),
                                          link=LinkProfile(rate_bps=100e6, rtt_s=0.0), inferences_per_head=1000)).chosen
            assert (chosen.spec.split.cut == model.num_nodes) == (seconds == 1.0)   # a slow server sends work to the device
    finally:
        planner.set_speed(None, {})
