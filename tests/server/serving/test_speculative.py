"""Speculative drafting over real gRPC: a device drafts with a small model of its own and the server verifies
with the target. Greedy: the target's own tokens for every draft and k. Sampling: the first token follows the
target's distribution (chi-square). Bad drafts: each refused by status before anything is held."""
import statistics
import threading

import numpy as np
import pytest
import torch

from qpart.common import sampling, speculative, tokenizer
from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.device.speculative import SpeculativeGeneration
from qpart.server.serving.main import RunningServer
from qpart.server.serving.settings import ServerSettings
from qpart.v1 import service_pb2 as spb
from tests.conftest import TINY_DRAFT
from tests.server.serving.test_generation import MODEL, generation, greedy, lm_server, model  # noqa: F401 (fixtures)
from tests.server.serving.test_generation_limits import (CUT, call, hidden, ids, limited, plans,  # noqa: F401
                                                          refused, status)

PROMPTS = ["Q: What is the difference", "It is a truth universally"]


@pytest.fixture(scope="module")
def lm_client(lm_server):
    with ServerClient(f"127.0.0.1:{lm_server.port}", timeout_s=60) as c:
        yield c


def drafting(client, draft: str, k: int, bits: int = 8) -> SpeculativeGeneration:
    """The target whole on the server (cut 0) and the draft whole on the device at `bits` bits."""
    target, info = generation(client, 0, activation_bits=32), client.list_models(draft)[0]
    fixed = spb.FixedPlan(cut=len(info.nodes), weight_bits=[bits])
    plan = client.plan(spb.PlanRequest(model=draft, policy=spb.FIXED, fixed=fixed))
    head, _ = DeviceAgent(client, HeadCache(None), backend="numpy").obtain_head(plan)
    return SpeculativeGeneration(client, target.plan, client.list_models(MODEL)[0], head, info, k)


@pytest.mark.parametrize("draft, k", [(TINY_DRAFT, 1), (TINY_DRAFT, 4), (MODEL, 3)])
def test_greedy_drafting_gives_the_targets_own_tokens(lm_client, model, draft, k):
    spec = drafting(lm_client, draft, k, bits=8 if draft != MODEL else 16)
    for prompt in PROMPTS:
        ids_ = tokenizer.ByteTokenizer().encode(prompt)
        out = spec.generate(ids_, 60)
        assert out.tokens == greedy(model, ids_, 60)
        assert out.rounds < 60 and out.drafted >= out.accepted > 0     # drafts were sent and some were kept
        if draft == MODEL:                      # the target drafting for itself (16 bits): almost every draft kept
            assert out.accepted >= 0.9 * out.drafted


def test_sampled_first_token_follows_the_targets_distribution(lm_client, model):
    prompt = tokenizer.ByteTokenizer().encode("It is a truth")
    with torch.inference_mode():
        scores = model.module()(torch.tensor([prompt], dtype=torch.float32))[0][0, -1].numpy()
    p = speculative.probabilities(scores, 1.0)                                # [vocab]
    spec, n = drafting(lm_client, TINY_DRAFT, 1), 400
    counts = np.zeros_like(p)
    for seed in range(n):
        out = spec.generate(prompt, 2, sampling.Sampling(temperature=1.0, seed=seed))
        counts[out.tokens[0]] += 1
        assert out.drafted == 1 and out.accepted <= 1                 # one draft, verified with its probabilities
    order = np.argsort(-p)                    # bins of the likeliest tokens, the rest pooled, each expecting >= 5
    keep = [t for t in order if n * p[t] >= 5]
    observed = np.append(counts[keep], n - counts[keep].sum())
    expected = np.append(n * p[keep], n - n * p[keep].sum())
    statistic = float(((observed - expected) ** 2 / expected).sum())
    p_value = float(torch.special.gammaincc(torch.tensor(len(keep) / 2, dtype=torch.float64),
                                            torch.tensor(statistic / 2, dtype=torch.float64)))
    assert p_value > 1e-3, f"chi-square {statistic:.1f} over {len(keep) + 1} bins, p = {p_value:.2e}"


def test_bad_drafts_are_refused_before_anything_is_held(limited, plans):
    plan = plans[0].plan.plan_id
    greedy_run = dict(plan_id=plan, position=0)
    sampled = dict(greedy_run, sampling={"temperature": 1.0, "seed": 3})
    vocab = 257
    good_q = np.full((2, vocab), 1 / vocab, "<f4")
    cases = [
        (dict(greedy_run, tensors=[ids([1, 2, 3])], draft_count=17), "INVALID_ARGUMENT", "max_draft_tokens"),
        (dict(greedy_run, tensors=[ids([1, 2])], draft_count=2), "INVALID_ARGUMENT", "fewer than the run"),
        (dict(greedy_run, tensors=[ids([1, 2, 300])], draft_count=1), "INVALID_ARGUMENT", "token ids"),
        (dict(greedy_run, tensors=[ids([1] * 199 + [2, 3])], draft_count=2), "OUT_OF_RANGE", "context"),
        (dict(greedy_run, tensors=[ids([1, 2, 3])], draft_count=2, draft_probabilities=good_q.tobytes()),
         "INVALID_ARGUMENT", "decodes greedily"),
        (dict(sampled, tensors=[ids([1, 2, 3])], draft_count=2, draft_probabilities=good_q[:1].tobytes()),
         "INVALID_ARGUMENT", "take 2,056"),
        (dict(sampled, tensors=[ids([1, 2, 3])], draft_count=2, draft_probabilities=(good_q * 2).tobytes()),
         "INVALID_ARGUMENT", "sum to"),
        (dict(sampled, tensors=[ids([1, 2, 3])], draft_count=2,
              draft_probabilities=np.where(np.arange(vocab) == 5, -0.5, good_q + 0.5 / (vocab - 1)).astype("<f4")
              .tobytes()), "INVALID_ARGUMENT", "non-negative"),
        (dict(greedy_run, plan_id=plans[CUT].plan.plan_id, tensors=[hidden(2)], draft_count=1),
         "INVALID_ARGUMENT", "whole model (cut 0)"),
    ]
    for fields, code, words in cases:
        error = refused(limited, "pi-a", spb.GenerateRequest(**fields))
        assert status(error) == code and words in error.details(), (fields.get("draft_count"), error.details())


def test_another_clients_session_is_refused_to_drafts(limited, plans):
    opened = call(limited, "pi-a", spb.GenerateRequest(plan_id=plans[0].plan.plan_id, tensors=[ids([1, 2])]))
    session, position = opened[-1].session_id, opened[-1].position
    error = refused(limited, "pi-b", spb.GenerateRequest(session_id=session, position=position,
                                                         tensors=[ids([opened[-1].token, 4])], draft_count=1))
    assert status(error) == "PERMISSION_DENIED"
    assert call(limited, "pi-a", spb.GenerateRequest(session_id=session, close=True))[-1].closed


@pytest.fixture(scope="module")
def batching_server(lm_models):
    running = RunningServer(ServerSettings(models=lm_models, port=0, measure_speed=False, warm_heads=False,
                                           batch_max_inputs=8, batch_delay_ms=5))
    yield running
    running.stop(0, notice=0)


def test_many_devices_share_the_targets_passes_and_get_its_own_tokens(batching_server, model):
    """Four drafting devices (k = 3) and two sending the prompt, at once: their runs (verifications, streamed
    steps, prompts) join in shared passes of the target, and each gets the target's greedy tokens."""
    words = tokenizer.ByteTokenizer()
    prompts = [words.encode(p) for p in ["Q: What is", "It is a truth universally", "You will be", "A", "Hello",
                                         "The best"]]
    with ServerClient(f"127.0.0.1:{batching_server.port}", timeout_s=60) as client:
        devices = [drafting(client, TINY_DRAFT, 3) for _ in range(4)] + [generation(client, 0, activation_bits=32)
                                                                         for _ in range(2)]
        got = [None] * len(devices)

        def one(i):
            got[i] = devices[i].generate(prompts[i], 40).tokens

        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(devices))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    assert got == [greedy(model, p, 40) for p in prompts]
    assert batching_server.core.batcher.merged > 0                 # runs of different sessions shared a pass


def test_k_follows_the_acceptance_the_device_observes(lm_client, model):
    """Adaptive k: the target drafting for itself (every draft accepted) drafts more per round; a 2-bit draft
    (few accepted) falls to one; the tokens stay the target's."""
    prompt = tokenizer.ByteTokenizer().encode(PROMPTS[0])
    expected = greedy(model, prompt, 80)
    for draft, bits, rises in ((MODEL, 16, True), (TINY_DRAFT, 2, False)):
        spec = drafting(lm_client, draft, 3, bits=bits)
        spec.adapt = True
        out = spec.generate(prompt, 80)
        assert out.tokens == expected
        settled = statistics.median(out.ks[4:-2])                      # after k first moves, before the end's
        assert out.ks[0] == 3 and (settled > 3 if rises else settled < 3), (draft, out.ks)
