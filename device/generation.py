"""Split decoding on the device: the head's blocks with the device's own key/value cache, one Generate stream.

Per run the device runs its head over the new positions (the prompt at prefill, then each token the server
answered), packs the crossing hidden states with the plan's quantizers and sends them; the server's tail
answers the next token. Where the plan runs the whole model on the device the tokens are picked here, with
the same rule as the server's (qpart.common.sampling); where it cuts at 0 the device sends the prompt's ids
and the server generates and streams the tokens.

When the server has lost the session (NOT_FOUND: closed, idle, restarted), refuses its position
(FAILED_PRECONDITION) or the stream breaks (UNAVAILABLE), the device starts over with a fresh cache and a new
session and resends its context: the prompt and the tokens it has. Tokens it has are never asked for again.
"""
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from qpart.common import quant, sampling, tensors
from qpart.common.errors import FailedPrecondition, InvalidArgument, NotFound, QpartError, Unavailable
from qpart.common.kvcache import KVCache
from qpart.device.head import HeadExecutor
from qpart.v1 import service_pb2 as spb

RESENDS = 3          # new sessions a generation may open after losing one, before it gives up


@dataclass
class Generated:
    tokens: list[int]                                          # the generated ids, in order
    first_token_s: float = 0.0                                 # from the call to the first token
    token_s: list[float] = field(default_factory=list)         # each later token's time after the one before it
    device_s: float = 0.0                                      # the head's runs and the packing, all runs
    sent_bytes: list[int] = field(default_factory=list)        # Generate request bytes of each run
    resent_contexts: int = 0                                   # sessions opened again, the context resent
    stopped: str = ""                                          # "tokens", "stop token" or "context"
    server_s: float = 0.0                                      # server compute its answers reported
    rounds: int = 0                                            # speculative drafting: runs the server verified,
    drafted: int = 0                                           # drafts sent,
    accepted: int = 0                                          # and drafts the target accepted,
    examined: int = 0                                          # of those it examined (up to the first rejected):
                                                               # accepted / examined is the per-draft acceptance
    ks: list[int] = field(default_factory=list)                # drafts sent in each round


def recorder(out: Generated, on_token=None):
    """arrived(token): records a token in `out` as it comes (the first token's time from now, each later one's
    after the one before it) and calls on_token(token)."""
    marks = [time.perf_counter()]

    def arrived(token: int) -> None:
        now = time.perf_counter()
        if not out.tokens:
            out.first_token_s = now - marks[0]
        else:
            out.token_s.append(now - marks[-1])
        marks.append(now)
        out.tokens.append(token)
        if on_token is not None:
            on_token(token)
    return arrived


def sampling_to_pb(s: sampling.Sampling) -> spb.Sampling:
    return spb.Sampling(temperature=s.temperature, seed=s.seed)


class Conversation:
    """One Generate stream: ask() sends a request and returns its answers, up to the one marked last."""

    def __init__(self, client, timeout_s: float):
        self._requests: queue.Queue = queue.Queue()
        self._answers = client.generate(iter(self._requests.get, None), timeout_s)

    def ask(self, request: spb.GenerateRequest, on_answer=None) -> list[spb.GenerateResponse]:
        self._requests.put(request)
        answers = []
        for answer in self._answers:
            answers.append(answer)
            if on_answer is not None:
                on_answer(answer)
            if answer.last:
                return answers
        raise Unavailable("the Generate stream ended before the run was answered")

    def close(self) -> None:
        self._requests.put(None)
        try:
            for _ in self._answers:     # the server ends the stream once the requests end
                pass
        except QpartError:
            pass                        # a stream that broke has nothing more to say


class SplitGeneration:
    def __init__(self, client, plan: spb.PlanResponse, executor: HeadExecutor | None, info: spb.ModelInfo):
        """client: a ServerClient; executor: the plan's head (None at cut 0); info: the model's ModelInfo."""
        if not info.HasField("sequence"):
            raise InvalidArgument(f"model {info.name!r} is not a language model")
        from qpart.device.agent import activation_coding, activation_params
        self.client, self.plan, self.executor = client, plan, executor
        self.vocab, self.context = info.sequence.vocab_size, info.sequence.max_positions
        self.device_only = executor is not None and not plan.activations
        self.crossing = [(a.name, tuple(a.sample_shape)[1:], a.bits, activation_params(a), *activation_coding(a))
                         for a in plan.activations]
        if plan.cut == 0 and (len(self.crossing) != 1 or self.crossing[0][2] != quant.FLOAT_BITS):
            raise InvalidArgument("a language model's input is token ids: a cut-0 plan must send them at 32 bits")
        self._lock = threading.Lock()         # one generation at a time: the cache is the sequence's

    def generate(self, prompt: list[int], max_new_tokens: int, pick: sampling.Sampling = sampling.Sampling(),
                 stop_tokens: tuple[int, ...] = (), on_token=None) -> Generated:
        """Up to max_new_tokens tokens after the prompt's ids; on_token(token) is called as each arrives."""
        if not prompt or any(not 0 <= int(t) < self.vocab for t in prompt):
            raise InvalidArgument(f"the prompt needs at least one token id, each 0 .. {self.vocab - 1}")
        if len(prompt) >= self.context:
            raise InvalidArgument(f"the prompt holds {len(prompt)} tokens; the model's context is {self.context}")
        if not 1 <= max_new_tokens <= self.context - len(prompt):
            raise InvalidArgument(f"max_new_tokens must be 1 to {self.context - len(prompt)} (the model's context of "
                                  f"{self.context} less the prompt's {len(prompt)} tokens), got {max_new_tokens}")
        with self._lock:
            out = Generated([])
            arrived = recorder(out, on_token)
            stops = set(int(t) for t in stop_tokens)
            if self.device_only:
                self._on_device(list(prompt), max_new_tokens, pick, stops, arrived, out)
            else:
                while True:
                    try:
                        self._split(list(prompt) + out.tokens, max_new_tokens - len(out.tokens), pick, stops,
                                    arrived, out)
                        break
                    except (NotFound, FailedPrecondition, Unavailable):
                        if out.resent_contexts == RESENDS:
                            raise
                        out.resent_contexts += 1
            return out

    def _run_head(self, ids: list[int], cache: KVCache, out: Generated) -> list[np.ndarray]:
        began = time.perf_counter()
        x = np.array([ids], np.float32)                                                     # [1, T]
        y = self.executor.run(x, cache) if self.executor is not None else [x]
        out.device_s += time.perf_counter() - began
        return y

    def _on_device(self, context, budget, pick, stops, arrived, out: Generated) -> None:
        cache = KVCache(self.context)
        pending = context
        for _ in range(budget):
            scores = self._run_head(pending, cache, out)[0]                                  # [1, T, vocab]
            token = sampling.pick(scores[0, -1], pick, cache.position)
            arrived(token)
            if token in stops:
                out.stopped = "stop token"
                return
            if cache.position >= self.context:
                out.stopped = "context"
                return
            pending = [token]
        out.stopped = "tokens"

    def _pack(self, values: list[np.ndarray], length: int, out: Generated) -> list[spb.TensorBatch]:
        began, batches = time.perf_counter(), []
        for (name, rest, bits, params, coding, quality), value in zip(self.crossing, values, strict=True):
            if value.shape[1:] != (length,) + rest:
                raise InvalidArgument(f"the head produced {list(value.shape[1:])} for {name!r}, the plan expects "
                                      f"{[length, *rest]}")
            data = tensors.encode_message(value, params, coding, quality)
            batches.append(spb.TensorBatch(name=name, sample_shape=(length,) + rest, bits=bits, coding=coding,
                                           data=data))
        out.device_s += time.perf_counter() - began
        return batches

    def _split(self, context, budget, pick, stops, arrived, out: Generated) -> None:
        """One session: prefill the context, then one run per token (cut 0: the server feeds tokens itself)."""
        cache = KVCache(self.context)
        conversation = Conversation(self.client, self.client.timeout_s + 2.0 * budget)
        try:
            self._run_session(conversation, cache, context, budget, pick, stops, arrived, out)
        finally:
            conversation.close()

    def _run_session(self, conversation, cache, context, budget, pick, stops, arrived, out: Generated) -> None:
        session, position, pending, first = "", 0, context, True
        try:
            while budget > 0:
                many = budget if self.plan.cut == 0 else 1
                packed = self._pack(self._run_head(pending, cache, out), len(pending), out)
                request = spb.GenerateRequest(plan_id=self.plan.plan_id if first else "", session_id=session,
                                              position=position, tensors=packed, max_new_tokens=many,
                                              stop_tokens=sorted(stops) if many > 1 else ())
                if first:
                    request.sampling.CopyFrom(sampling_to_pb(pick))
                out.sent_bytes.append(request.ByteSize())
                answers = conversation.ask(request, lambda a: arrived(a.token))
                out.server_s += sum(a.server_compute_s for a in answers)
                first, budget = False, budget - len(answers)
                session, position, token = answers[-1].session_id, answers[-1].position, answers[-1].token
                if token in stops:
                    out.stopped = "stop token"
                    break
                if position >= self.context:
                    out.stopped = "context"
                    break
                pending = [token]
            else:
                out.stopped = "tokens"
        except (FailedPrecondition, Unavailable):
            if session:                # the device lost track of a session the server may still hold: free it
                self._close(session, Conversation(self.client, self.client.timeout_s))
            raise
        self._close(session, conversation)

    @staticmethod
    def _close(session: str, conversation: "Conversation") -> None:
        try:
            conversation.ask(spb.GenerateRequest(session_id=session, close=True))
        except QpartError:
            pass                       # the tokens are had; a session left open expires on the server
        finally:
            conversation.close()
