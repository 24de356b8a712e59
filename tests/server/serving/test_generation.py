"""Split decoding over real gRPC (Generate): a device runs the first blocks with its own cache, the server the rest
with the session's; at 16 bits the tokens are the unsplit model's, at every cut one tensor crosses."""
import numpy as np
import pytest
import torch

from qpart.common import sampling, tokenizer
from qpart.common.costmodel import LinkProfile
from qpart.device.agent import DeviceAgent
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient
from qpart.device.generation import SplitGeneration
from qpart.device.split_client import SplitClient
from qpart.server.models.repository import ModelRepository
from qpart.server.serving.main import RunningServer
from qpart.server.serving.settings import ServerSettings
from qpart.v1 import service_pb2 as spb

MODEL = "gpt-fortunes"
PROMPTS = ["Q: What is the difference", "You will be", "It is a truth universally"]
TOKENS = 200


@pytest.fixture(scope="module")
def lm_server(lm_models):
    running = RunningServer(ServerSettings(models=lm_models, port=0, measure_speed=False, warm_heads=False))
    yield running
    running.stop(0, notice=0)


@pytest.fixture(scope="module")
def model(lm_models):
    return ModelRepository(lm_models).get(MODEL)


def greedy(model, prompt: list[int], n: int) -> list[int]:
    """The float model's greedy tokens, each from the whole sequence run again (no cache)."""
    ids, module = list(prompt), model.module()
    with torch.inference_mode():
        for _ in range(n):
            scores = module(torch.tensor([ids], dtype=torch.float32))[0]                     # [1, T, vocab]
            ids.append(int(scores[0, -1].argmax()))
    return ids[len(prompt):]


def generation(client: ServerClient, cut: int, weight_bits: int = 16, activation_bits: int = 16,
               backend: str = "numpy") -> SplitGeneration:
    fixed = spb.FixedPlan(cut=cut, weight_bits=[weight_bits], activation_bits=[activation_bits])
    plan = client.plan(spb.PlanRequest(model=MODEL, policy=spb.FIXED, fixed=fixed))
    executor, _ = DeviceAgent(client, HeadCache(None), backend=backend).obtain_head(plan)
    return SplitGeneration(client, plan, executor, client.list_models(MODEL)[0])


def single_tensor_cuts(model) -> list[int]:
    return [c.cut for c in model.cuts() if len(c.tensors) <= 1]


def test_at_16_bits_every_cut_generates_the_unsplit_models_greedy_tokens(lm_server, model):
    words = tokenizer.ByteTokenizer()
    prompts = [words.encode(p) for p in PROMPTS]
    expected = [greedy(model, p, TOKENS) for p in prompts]
    cuts = single_tensor_cuts(model)
    assert {0, model.num_nodes} < set(cuts) and len(cuts) >= 6
    with ServerClient(f"127.0.0.1:{lm_server.port}") as client:
        for cut in cuts:
            split = generation(client, cut, activation_bits=32 if cut == 0 else 16)
            for prompt, tokens in list(zip(prompts, expected))[:3 if cut in (0, 15, model.num_nodes) else 1]:
                out = split.generate(prompt, TOKENS)
                assert out.tokens == tokens, f"cut {cut}"
                assert out.stopped == "tokens" and out.resent_contexts == 0
                runs = 1 if cut in (0, model.num_nodes) else TOKENS       # cut 0: the server feeds tokens itself
                assert len(out.sent_bytes) == (runs if cut != model.num_nodes else 0)
    assert lm_server.core.generation.open_sessions == 0 and lm_server.core.generation.reserved_bytes == 0


def test_hidden_states_at_8_bits_cross_in_a_quarter_of_the_bytes(lm_server, model):
    prompt = tokenizer.ByteTokenizer().encode(PROMPTS[0])
    with ServerClient(f"127.0.0.1:{lm_server.port}") as client:
        wide, narrow = (generation(client, 15, 16, bits).generate(prompt, 20) for bits in (32, 8))
    d = model.profile.cut(15).shapes[0][1]
    # the prompt's positions in one message, then one position per token: [T, D] codes plus the message's framing
    assert wide.sent_bytes[0] - 4 * d * len(prompt) == pytest.approx(narrow.sent_bytes[0] - d * len(prompt), abs=8)
    assert set(wide.sent_bytes[1:]) == {wide.sent_bytes[1]} and set(narrow.sent_bytes[1:]) == {narrow.sent_bytes[1]}
    assert wide.sent_bytes[1] - narrow.sent_bytes[1] == pytest.approx(3 * d, abs=4)  # 4 bytes a value, then 1 (+varints)
    assert narrow.sent_bytes[1] <= d + 80        # the rest: session id (34), tensor name and shape, position
    assert sum(a == b for a, b in zip(wide.tokens, narrow.tokens)) >= 10      # 8-bit states mostly keep the tokens


def test_sampled_tokens_follow_the_seed_wherever_the_cut_falls(lm_server, model):
    prompt = tokenizer.ByteTokenizer().encode(PROMPTS[1])
    pick = sampling.Sampling(temperature=0.9, seed=7)
    with ServerClient(f"127.0.0.1:{lm_server.port}") as client:
        runs = {cut: generation(client, cut, activation_bits=32 if cut == 0 else 16).generate(prompt, 60, pick).tokens
                for cut in (0, 15, model.num_nodes)}
        other = generation(client, 15).generate(prompt, 60, sampling.Sampling(0.9, 8)).tokens
    assert runs[0] == runs[15] == runs[model.num_nodes]
    assert other != runs[15] and runs[15] != greedy(model, prompt, 60)


def test_a_lost_session_is_resent_and_no_token_is_asked_for_twice(lm_server, model):
    prompt = tokenizer.ByteTokenizer().encode(PROMPTS[2])
    expected = greedy(model, prompt, 80)
    generations = lm_server.core.generation

    def lose_sessions(token):
        if len(seen) in (30, 55):               # the server forgets every session (as after a restart)
            for session in list(generations._sessions.values()):
                generations.close(session)
        seen.append(token)
    seen: list[int] = []
    with ServerClient(f"127.0.0.1:{lm_server.port}") as client:
        out = generation(client, 15).generate(prompt, 80, on_token=lose_sessions)
    assert out.tokens == expected == seen and out.resent_contexts == 2
    assert generations.open_sessions == 0


def test_the_library_generates_text(lm_server, model, tmp_path):
    fixed = spb.FixedPlan(cut=15, weight_bits=[16], activation_bits=[16])
    with SplitClient(f"127.0.0.1:{lm_server.port}", MODEL, link=LinkProfile(rate_bps=5e6, rtt_s=0.01),
                     cache_dir=tmp_path, measure_compute=False, backend="numpy", fixed=fixed) as split:
        streamed = []
        text = split.generate(PROMPTS[0], max_new_tokens=40, on_token=streamed.append)
    words = tokenizer.ByteTokenizer()
    expected = greedy(model, words.encode(PROMPTS[0]), 40)
    cut = expected.index(words.end_of_document) + 1 if words.end_of_document in expected else 40
    assert text.tokens == streamed == expected[:cut] and text.text == words.decode(expected[:cut])
