"""Speculative drafting on the device: a draft model of its own proposes k tokens, the server's target checks
them in one pass (qpart.common.speculative for the rules).

The draft is a language model run whole on the device (a device_only plan of a draft model, its head shipped
packed and quantized like any other), with its own key/value cache; the target runs on the server in a
Generate session of a cut-0 plan. Each round the device drafts k tokens after its context, sends the tokens
the server has not seen and the k drafts (with the distributions they were drawn from, under sampling) and gets
back how many drafts the target accepted and the target's own next token. Both caches keep the accepted
tokens only: the server truncates its own, the device cuts its draft cache back to the accepted length. A lost
session is opened again with the context resent, as in split decoding.
"""
import threading
import time
from collections import deque

import numpy as np

from qpart.common import quant, sampling, speculative
from qpart.common.errors import FailedPrecondition, InvalidArgument, NotFound, Unavailable
from qpart.common.kvcache import KVCache
from qpart.device.generation import RESENDS, Conversation, Generated, SplitGeneration, recorder, sampling_to_pb
from qpart.device.head import HeadExecutor
from qpart.v1 import service_pb2 as spb

MAX_K = 16           # the most drafts a round proposes (the server states its own limit, ServerLimits.max_draft_tokens)
WINDOW = 16          # rounds whose acceptance and times choose the next k
SETTLE = 4           # rounds observed before k moves


class AdaptiveK:
    """k for the next round, from what this device observes over the last WINDOW rounds: the drafts' acceptance a
    (drafts accepted over drafts the target examined: up to and including the first rejected), its drafting time
    per draft d and the rest of a round r (the round trip and the server's pass). A round of k drafts yields
    E(k) = (1 - a^(k+1)) / (1 - a) tokens in r + k d seconds; k maximises E(k) / (r + k d), so it grows while
    the drafts are accepted and the round trip dominates, and falls when acceptance drifts down."""

    def __init__(self, k: int, adapt: bool = True, most: int = MAX_K):
        self.k, self.adapt, self.most = k, adapt, most
        self.rounds: deque = deque(maxlen=WINDOW)        # (drafts, accepted, examined, drafting s, round s)

    def observe(self, drafts: int, accepted: int, drafting_s: float, round_s: float) -> None:
        if drafts:
            self.rounds.append((drafts, accepted, accepted + (accepted < drafts), drafting_s, round_s))
        if self.adapt and len(self.rounds) >= SETTLE:
            self.k = self.best()

    def acceptance(self) -> float:
        examined = sum(r[2] for r in self.rounds)
        return sum(r[1] for r in self.rounds) / examined if examined else 0.0

    def best(self) -> int:
        a = min(max(self.acceptance(), 0.01), 0.99)
        d = sum(r[3] for r in self.rounds) / sum(r[0] for r in self.rounds)                # s per draft
        rest = max(sum(r[4] - r[3] for r in self.rounds) / len(self.rounds), 1e-6)         # s per round beside
        return max(range(1, self.most + 1), key=lambda k: (1 - a ** (k + 1)) / (1 - a) / (rest + k * d))


class SpeculativeGeneration:
    def __init__(self, client, plan: spb.PlanResponse, info: spb.ModelInfo, draft: HeadExecutor,
                 draft_info: spb.ModelInfo, k: int, adapt: bool = False, most: int = MAX_K):
        """plan: the target's cut-0 plan (the server runs it whole); draft: the draft model's head, run whole
        here (a device_only plan of a model with the target's tokenizer); k: drafts per round (adapt: the first
        round's, then chosen from the acceptance and times observed, AdaptiveK, up to `most`)."""
        if plan.cut != 0:
            raise InvalidArgument(f"speculative drafting needs the target whole on the server (a cut-0 plan); this "
                                  f"plan cuts at {plan.cut}")
        if not draft_info.HasField("sequence") or draft_info.sequence.vocab_size != info.sequence.vocab_size or \
                draft_info.tokenizer != info.tokenizer:
            raise InvalidArgument(f"draft {draft_info.name!r} must be a language model with the target's tokenizer "
                                  f"({info.tokenizer!r}, {info.sequence.vocab_size} ids)")
        if not 1 <= k <= MAX_K:
            raise InvalidArgument(f"drafts per round must be 1 to {MAX_K}, got {k}")
        if len(plan.activations) != 1 or plan.activations[0].bits != quant.FLOAT_BITS:
            raise InvalidArgument("a language model's input is token ids: a cut-0 plan must send them at 32 bits")
        self._lock = threading.Lock()          # one generation at a time: the draft's cache is the sequence's
        self.client, self.plan, self.draft, self.k, self.adapt = client, plan, draft, k, adapt
        self.most = max(min(most, MAX_K), k)
        self.context = min(info.sequence.max_positions, draft_info.sequence.max_positions)

    def generate(self, prompt: list[int], max_new_tokens: int, pick: sampling.Sampling = sampling.Sampling(),
                 stop_tokens: tuple[int, ...] = (), on_token=None) -> Generated:
        """Up to max_new_tokens tokens after the prompt, drafted here and verified by the server: under greedy
        decoding exactly the target's own tokens. out.drafted / out.accepted count the drafts sent and kept."""
        if not prompt or len(prompt) >= self.context:
            raise InvalidArgument(f"the prompt needs 1 to {self.context - 1} tokens (the draft's and target's "
                                  f"context), got {len(prompt)}")
        if not 1 <= max_new_tokens <= self.context - len(prompt):
            raise InvalidArgument(f"max_new_tokens must be 1 to {self.context - len(prompt)}, got {max_new_tokens}")
        out = Generated([])
        arrived = recorder(out, on_token)
        with self._lock:
            while True:
                try:
                    self._session(list(prompt), max_new_tokens, pick, set(int(t) for t in stop_tokens), arrived, out)
                    return out
                except (NotFound, FailedPrecondition, Unavailable):
                    if out.resent_contexts == RESENDS:
                        raise
                    out.resent_contexts += 1

    def _draft(self, pending: list[int], cache: KVCache, count: int, pick, out: Generated):
        """count drafts after the context (pending: its tokens not yet in the draft's cache)."""
        began, drafts, rows = time.perf_counter(), [], []
        for _ in range(count):
            scores = self.draft.run(np.array([pending], np.float32), cache)[0]          # [1, T, vocab]
            token, q = speculative.draft(scores[0, -1], pick, cache.position)
            drafts.append(token)
            rows.append(q)
            pending = [token]
        out.device_s += time.perf_counter() - began
        return drafts, rows

    def _session(self, prompt, max_new_tokens, pick, stops, arrived, out: Generated) -> None:
        context = prompt + out.tokens                # a resent session starts from every token had
        budget = max_new_tokens - len(out.tokens)
        cache, held, session = KVCache(self.context), 0, ""
        chooser = AdaptiveK(self.k, self.adapt, self.most)
        conversation = Conversation(self.client, self.client.timeout_s + 2.0 * budget)
        try:
            while budget > 0:
                count = max(min(chooser.k, budget - 1, self.context - len(context)), 0)
                began, drafting = time.perf_counter(), out.device_s
                drafts, rows = self._draft(context[cache.position:], cache, count, pick, out)
                request = spb.GenerateRequest(plan_id="" if session else self.plan.plan_id, session_id=session,
                                              position=held, draft_count=count)
                ids = np.array(context[held:] + drafts, np.float32)
                request.tensors.add(name=self.plan.activations[0].name, sample_shape=[len(ids)], bits=32,
                                    data=ids.astype("<f4").tobytes())
                if count and not pick.greedy:
                    request.draft_probabilities = np.stack(rows).astype("<f4").tobytes()     # [count, vocab]
                if not session:
                    request.sampling.CopyFrom(sampling_to_pb(pick))
                out.sent_bytes.append(request.ByteSize())
                answer = conversation.ask(request)[-1]
                session, held, m = answer.session_id, answer.position, answer.accepted
                if m > count:
                    raise InvalidArgument(f"the server accepted {m} of {count} drafts")
                out.rounds, out.server_s = out.rounds + 1, out.server_s + answer.server_compute_s
                out.drafted, out.accepted = out.drafted + count, out.accepted + m
                out.examined += m + (m < count)
                out.ks.append(count)
                chooser.observe(count, m, out.device_s - drafting, time.perf_counter() - began)
                cache.truncate(min(cache.position, len(context) + m))     # the draft's cache keeps accepted ones
                for token in drafts[:m] + [answer.token]:
                    context.append(token)
                    budget -= 1
                    arrived(token)
                    if token in stops:
                        out.stopped, budget = "stop token", 0
                        break
                else:
                    if held >= self.context:
                        out.stopped, budget = "context", 0
            out.stopped = out.stopped or "tokens"
        except (FailedPrecondition, Unavailable):
            if session:
                SplitGeneration._close(session, Conversation(self.client, self.client.timeout_s))
            raise
        SplitGeneration._close(session, conversation)


def planned(agent, plan: spb.PlanResponse, info: spb.ModelInfo) -> SpeculativeGeneration:
    """The drafting a plan asks for (plan.drafting, qpart.server.planning.drafting): the draft's head fetched by
    its plan id (or taken from the head cache), k to start from as planned, then adapted to what is observed, up
    to this device's and the server's limits."""
    d = plan.drafting
    draft_info = agent.model_info(d.model)
    if draft_info.version != d.model_version:
        raise FailedPrecondition(f"the plan drafts with version {d.model_version} of {d.model!r}, the server now holds "
                                 f"{draft_info.version}; plan again")
    shaped = spb.PlanResponse(plan_id=d.plan_id, model=d.model, model_version=d.model_version,
                              cut=len(draft_info.nodes), head_hash=d.head_hash, head_bytes=d.head_bytes)
    head, _ = agent.obtain_head(shaped)
    most = min(MAX_K, agent.client.limits().max_draft_tokens or MAX_K)
    return SpeculativeGeneration(agent.client, plan, info, head, draft_info, d.draft_tokens, adapt=True, most=most)
