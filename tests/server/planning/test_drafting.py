"""Drafting as a plan: acceptance measured on validation text (drafts.json), drafting priced with the splits
under one objective, the draft and k chosen per device, and a device that generates with the plan it got."""
import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch

from qpart.common import tokenizer
from qpart.common.costmodel import DeviceProfile, LinkProfile, Objective, predict
from qpart.common.errors import FailedPrecondition, InvalidArgument
from qpart.server.calibration import drafts as measuring
from qpart.server.calibration import text_samples
from qpart.server.models.repository import ModelRepository
from qpart.server.planning import drafting, generation
from qpart.server.planning.patterns import ModelSpeed
from qpart.server.planning.planner import PlanRequest
from qpart.server.planning.served import ServedModels
from tests.conftest import TINY_DRAFT

MODEL = "gpt-fortunes"
SHAPE = generation.Shape(20, 100)


@pytest.fixture(scope="module")
def repo_dir(lm_models, lm_catalog, tmp_path_factory):
    """A copy of the tiny language models (drafts.json would change other modules' plans)."""
    root = tmp_path_factory.mktemp("drafting") / "models"
    shutil.copytree(lm_models, root)
    return root


@pytest.fixture(scope="module")
def measured(repo_dir):
    repo = ModelRepository(repo_dir)
    found = measuring.ensure(repo.get(MODEL), repo)
    return found


STEP, PREFILL = 1.0e-3, 2.5e-3      # the server's timed step and 32-position prefill of the whole target, s


def write(repo_dir, acceptance: float) -> ServedModels:
    """drafts.json as if the tiny draft were accepted this often at every temperature, and the server's timings of
    the target stubbed (a pass over k + 1 positions costs little more than one step, as timed on real servers)."""
    repo = ModelRepository(repo_dir)
    target, draft = repo.get(MODEL), repo.get(TINY_DRAFT)
    drafting.save(target, drafting.Drafts(target.version, 1000, measured=[
        drafting.Measured(draft.name, draft.version, 8, [acceptance] * 3)]))
    served = ServedModels(ModelRepository(repo_dir))
    served.set_speed(None, {(MODEL, target.version): ModelSpeed({0: STEP}, prefill_seconds={0: PREFILL})})
    return served


def small_device(served: ServedModels, drafts: int = 16) -> DeviceProfile:
    """A device with room for the draft (and its cache) but not for the target whole."""
    memory = served.plan(request(policy="speculative")).chosen.memory_bytes
    return DeviceProfile(macs_per_second=1e8, seconds_per_node=1e-5, max_draft_tokens=drafts, memory_bytes=memory)


def request(**kw) -> PlanRequest:
    base = dict(model=MODEL, device=DeviceProfile(macs_per_second=1e8, seconds_per_node=1e-5, max_draft_tokens=16),
                link=LinkProfile(rate_bps=20e6, rtt_s=0.01), accuracy_budget=1.0, inferences_per_head=1000,
                generation=SHAPE, objective=Objective(1, 0, 100))
    return PlanRequest(**(base | kw))


def test_acceptance_is_the_share_of_drafts_the_target_would_keep():
    same = torch.randn(50, 7)
    assert measuring._accepted(same, same, 0.0) == 1.0 and measuring._accepted(same, same, 1.0) == pytest.approx(1.0)
    apart = torch.full((50, 7), -30.0)
    other = apart.clone()
    apart[:, 0], other[:, 1] = 30.0, 30.0                          # each sure of a different token
    assert measuring._accepted(apart, other, 0.0) == 0.0 and measuring._accepted(apart, other, 1.0) < 1e-6


def test_drafts_json_holds_each_drafts_acceptance_as_the_modules_give_it(measured, repo_dir):
    repo = ModelRepository(repo_dir)
    target, draft = repo.get(MODEL), repo.get(TINY_DRAFT)
    assert [(m.model, m.weight_bits) for m in measured.measured] == [(TINY_DRAFT, b) for b in drafting.WIDTHS]
    assert drafting.read(target) == measured and measuring.current(target, repo)
    for m in measured.measured:
        assert all(0 < a < 1 for a in m.acceptance)
    # greedy acceptance at float weights, recomputed from the two torch modules on the same positions
    tokens = text_samples.stream(target, "validation")
    at = text_samples.positions(text_samples.WINDOW, len(tokens), 200, measuring.SEED)
    x, _ = text_samples.windows(tokens, at)
    with torch.inference_mode():
        big, small = (m.module()(torch.from_numpy(x))[0][:, -1] for m in (target, draft))       # [n, vocab]
    expected = float((big.argmax(1) == small.argmax(1)).double().mean())
    found = measuring.measure(target, repo, positions=200, widths=(32,))
    assert found.measured[0].acceptance[0] == pytest.approx(expected, abs=1e-9)


def test_a_draft_retrained_since_is_not_offered(repo_dir, measured):
    target = ModelRepository(repo_dir).get(MODEL)
    stale = drafting.Drafts(target.version, 10, measured=[drafting.Measured(TINY_DRAFT, "other", 8, [0.9] * 3)])
    drafting.save(target, stale)
    try:
        assert drafting.options(target, ModelRepository(repo_dir)) == ()
    finally:
        drafting.save(target, measured)


def test_drafting_wins_where_server_seconds_are_dear_and_the_target_does_not_fit(repo_dir):
    served = write(repo_dir, 0.8)
    device = small_device(served)
    plan = served.plan(request(device=device))
    d = plan.chosen.draft
    assert plan.spec.split.cut == 0 and d is not None and d.option.draft.name == TINY_DRAFT
    assert d.tokens_per_round == pytest.approx((1 - 0.8 ** (d.k + 1)) / 0.2)
    assert plan.chosen.work.runs_tail == pytest.approx(100 / d.tokens_per_round)      # rounds: N / E(k)
    assert "drafting with" in plan.reason and plan.chosen.accuracy_drop == 0.0
    # k is the one that prices best among 1..16
    ks = np.arange(1, 17)
    work, _ = drafting.workload(served.get(MODEL).model, d.option, ks, plan.chosen.work.head_bytes, SHAPE, 0.0,
                                served.server, served.get(MODEL).speed, device)
    every = [float(c) for c in predict(work, device, request().link, served.server, request().objective, 1000).objective]
    assert d.k == 1 + int(np.argmin(every)) and 1 < d.k < 16
    # the same device that does not draft sends its prompt and pays the server a step per token
    prompt = served.plan(request(device=dataclasses.replace(device, max_draft_tokens=0)))
    assert prompt.chosen.draft is None and prompt.spec.split.cut == 0
    assert plan.chosen.costs.server_time_s < prompt.chosen.costs.server_time_s / 2
    assert plan.chosen.costs.objective < prompt.chosen.costs.objective
    # time alone: the server streams every token after one round trip, drafting pays one a round
    fast = served.plan(request(device=device, objective=Objective(1, 0, 0)))
    assert fast.chosen.draft is None and fast.spec.split.cut == 0


def test_acceptance_moves_the_choice(repo_dir):
    high, low = (write(repo_dir, a).plan(request(policy="speculative")).chosen.draft for a in (0.95, 0.3))
    assert high.k > low.k                              # drafts rarely kept: fewer per round
    served = write(repo_dir, 0.0)
    assert served.plan(request(device=small_device(served))).chosen.draft is None   # nothing kept: never pays
    with pytest.raises(FailedPrecondition, match="does not draft"):
        served.plan(request(policy="speculative", device=DeviceProfile(macs_per_second=5e9)))


def test_drafting_is_priced_with_the_draft_head_memory_and_sampling(repo_dir):
    served = write(repo_dir, 0.8)
    plan = served.plan(request(policy="speculative"))
    assert plan.chosen.work.head_bytes > 0 and plan.chosen.head_hash
    held = served.plan(request(policy="speculative", held_heads=frozenset({plan.chosen.head_hash})))
    assert held.chosen.held and held.chosen.costs.downlink_time_s < plan.chosen.costs.downlink_time_s
    sampled = served.plan(request(policy="speculative", generation=generation.Shape(20, 100, 1.0)))
    assert sampled.chosen.work.uplink_bytes > plan.chosen.work.uplink_bytes     # the drafts' distributions travel
    tight = dataclasses.replace(small_device(served), memory_bytes=plan.chosen.memory_bytes - 1)
    with pytest.raises(FailedPrecondition, match="memory"):
        served.plan(request(policy="speculative", device=tight))
    limited = served.plan(request(policy="speculative", device=small_device(served, drafts=2)))
    assert limited.chosen.draft.k <= 2
    for _ in range(16):                     # rounds observed to take 20 ms of the server each: priced as observed
        served.get(MODEL).observe_verification(0.02)
    observed = served.plan(request(policy="speculative"))
    rounds = observed.chosen.work.runs_tail
    assert observed.chosen.costs.server_time_s == pytest.approx(0.02 * (rounds - 1), rel=0.05)
    with pytest.raises(InvalidArgument, match="temperature"):
        served.plan(request(generation=generation.Shape(20, 100, float("nan"))))


def test_a_device_generates_with_the_draft_it_was_planned(repo_dir, measured):
    from qpart.device.main import main as device_main
    from qpart.device.split_client import SplitClient
    from qpart.server.serving.main import RunningServer
    from qpart.server.serving.settings import ServerSettings
    from tests.server.serving.test_generation import greedy
    drafting.save(ModelRepository(repo_dir).get(MODEL), measured)
    running = RunningServer(ServerSettings(models=repo_dir, port=0, measure_speed=False, warm_heads=False))
    try:
        with SplitClient(f"127.0.0.1:{running.port}", MODEL, policy="speculative", cache_dir=None,
                         profile=DeviceProfile(macs_per_second=5e9), link=LinkProfile(rate_bps=20e6, rtt_s=0.05),
                         measure_compute=False, generation=(10, 40)) as client:
            assert client.plan.HasField("drafting") and client.plan.cut == 0
            d = client.plan.drafting
            assert d.model == TINY_DRAFT and 1 <= d.draft_tokens <= 16 and d.plan_id and d.head_bytes > 0
            prompt = tokenizer.ByteTokenizer().encode("It is a truth universally")
            out = client.generate(prompt, 40, stop_at_end=False)
            assert out.tokens == greedy(ModelRepository(repo_dir).get(MODEL), prompt, 40)
            assert out.generated.drafted > 0 and out.generated.rounds < 40
        report = repo_dir.parent / "drafted.json"
        assert device_main([f"--server=127.0.0.1:{running.port}", "--model", MODEL, "--policy", "speculative",
                            "--prompt", "It is a truth universally", "--max-new-tokens", "30", "--through-end",
                            "--no-measure-compute", "--macs-per-second", "5e9", "--no-cache", "--backend", "numpy",
                            "--json", str(report)]) == 0
        found = json.loads(report.read_text())["generation"]
        assert found["drafting"]["model"] == TINY_DRAFT and found["drafting"]["drafted"] > 0
        assert found["tokens"] == greedy(ModelRepository(repo_dir).get(MODEL), prompt, 30)
        with SplitClient(f"127.0.0.1:{running.port}", MODEL, policy="speculative", cache_dir=None, drafts=0,
                         profile=DeviceProfile(macs_per_second=5e9), measure_compute=False,
                         link=LinkProfile(rate_bps=20e6)) as client:
            with pytest.raises(FailedPrecondition, match="does not draft"):
                client.plan
    finally:
        running.stop(0, notice=0)
