"""Generation sessions: a language model's tail with its own key/value cache per session (the Generate RPC).

A session belongs to the client that opened it (the stream owner, qpart.server.serving.auth) and holds the
tail's cache for one sequence. Each run brings the crossing tensors of T new positions, checked against the
plan and the session's limits before anything is decoded, and is answered with the next token (at cut 0,
where the server runs the whole model, with several: it feeds each back itself). The device's head keeps its
own cache; when the server has lost the session (expired, closed, restarted) it opens a new one and resends
the context. A run at a position other than the session's is refused, so no position is answered twice.

Memory: the cache of every session is reserved before its run for the positions the run adds (the tail's
attention nodes' float32 keys and values), against a bound per session and one over all sessions.
"""
import logging
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
import torch

from qpart.common import quant, sampling, speculative, tensors
from qpart.common.errors import (FailedPrecondition, InvalidArgument, NotFound, OutOfRange, PermissionDenied,
                                 ResourceExhausted)
from qpart.common.kvcache import KVCache, cache_bytes_per_position
from qpart.common.names import shown
from qpart.server.models.repository import CutTensor
from qpart.server.serving import batching, joint_runs
from qpart.server.serving.auth import Identity

log = logging.getLogger("qpart.server.generation")
SESSION_ID = re.compile(r"[0-9a-f]{32}")
MAX_STOP_TOKENS = 64


@dataclass(frozen=True)
class Limits:
    sessions: int               # open sessions, all clients
    sessions_per_client: int    # open sessions of one client
    positions: int              # positions one session may hold (the model's context caps it too)
    session_cache_bytes: int    # bytes one session's cache may hold
    cache_bytes: int            # bytes all sessions' caches may hold
    idle_s: float               # a session unused this long is closed (0: never)
    draft_tokens: int = 16      # most drafted tokens one run may carry


@dataclass
class Run:
    """One GenerateRequest, parsed but not yet checked against a session."""
    plan_id: str
    session_id: str
    position: int
    tensors: list[tuple]                     # (name, sample_shape, bits, data, coding) per crossing tensor
    sampling: sampling.Sampling | None       # None: the session's
    max_new_tokens: int = 1
    stop_tokens: tuple[int, ...] = ()
    close: bool = False
    draft_count: int = 0                     # the run's last positions that are drafted tokens to verify
    draft_probabilities: bytes = b""         # float32 [draft_count, vocab] under sampling, else empty


@dataclass
class Answer:
    session_id: str
    position: int              # positions the session holds; the token is the one at this position
    token: int
    compute_s: float
    cache_bytes: int
    last: bool = False         # the last answer to its run
    closed: bool = False       # the session is closed (a close-only run's answer carries no token)
    accepted: int = 0          # drafts of the run accepted before the token


@dataclass
class Session:
    id: str
    owner: str
    plan_id: str
    expires: float                   # the plan id's expiry, unix seconds
    cut: int
    crossing: list[CutTensor]        # what the device sends, per position
    tail: torch.nn.Module
    vocab: int
    context: int                     # most positions the session may hold
    per_position: int                # cache bytes one position costs here
    sampling: sampling.Sampling
    cache: KVCache
    reserved: int = 0                # cache bytes reserved for this session
    served: object = None            # the ServedModel the plan came from (it learns how fast tokens stream)
    used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)


class Generation:
    def __init__(self, core, limits: Limits):
        """core: the QpartCore whose plans, admission and settings the sessions use."""
        self.core, self.limits = core, limits
        self._sessions: dict[str, Session] = {}
        self._reserved = 0               # cache bytes reserved over all sessions
        self._lock = threading.Lock()

    @property
    def open_sessions(self) -> int:
        return len(self._sessions)

    @property
    def reserved_bytes(self) -> int:
        return self._reserved

    def run(self, run: Run, owner: str, identity: Identity) -> Iterator[Answer]:
        """The answers to one run (one per token); every check is made before anything is decoded or run."""
        self.expire()
        new = not run.session_id
        if not new:
            session = self._find(run, owner)
        else:
            if run.close and not run.tensors:
                raise InvalidArgument("close needs the session_id of the session to close")
            session = self._open(run, owner, identity)
        if not session.lock.acquire(blocking=False):
            raise FailedPrecondition(f"generation session {session.id} is busy with another run; send one run at a "
                                     f"time and wait for its answers")
        try:
            yield from self._continue(session, run, new)
        finally:
            session.used = time.monotonic()
            session.lock.release()

    def _find(self, run: Run, owner: str) -> Session:
        if not SESSION_ID.fullmatch(run.session_id):
            raise InvalidArgument(f"session id {shown(run.session_id)} is not 32 lowercase hex characters")
        session = self._sessions.get(run.session_id)
        if session is None:
            raise NotFound(f"generation session {run.session_id} is not open here (closed, idle longer than "
                           f"{self.limits.idle_s:g} s, or the server restarted): open a new session and resend the "
                           f"context")
        if session.owner != owner:
            raise PermissionDenied(f"generation session {run.session_id} belongs to another client")
        if run.plan_id and run.plan_id != session.plan_id:
            raise InvalidArgument("the plan id differs from the session's; a session keeps the plan it was opened on")
        self.core.signer.check_expiry(session.expires)
        if run.sampling is not None and run.sampling != session.sampling:
            raise InvalidArgument(f"sampling {run.sampling} differs from the session's {session.sampling}")
        return session

    def _open(self, run: Run, owner: str, identity: Identity) -> Session:
        if not run.plan_id:
            raise InvalidArgument("a new generation session needs the plan id (GenerateRequest.plan_id)")
        served, spec = self.core.resolve(run.plan_id, identity)
        model = served.model
        if model.profile.sequence is None:
            raise FailedPrecondition(f"model {model.name!r} is not a language model; Generate serves those only "
                                     f"(use Infer)")
        cut = model.profile.cut(spec.split.cut)
        if not cut.runs_tail:
            raise FailedPrecondition("this plan runs the whole model on the device; there is nothing to generate here")
        if run.position != 0:
            raise FailedPrecondition(f"a new session holds 0 positions; the run says {run.position}")
        vocab, context = model.profile.sequence
        attention = [n.attention for n in model.spec.nodes[cut.cut:] if n.WhichOneof("op") == "attention"]
        crossing = model.crossing(spec.split)
        if cut.cut == 0 and crossing[0].bits != quant.FLOAT_BITS:
            raise FailedPrecondition(f"a language model's input is token ids, sent as float32; this plan sends "
                                     f"them at {crossing[0].bits} bits (plan with activation bits 32 at cut 0)")
        return Session(secrets.token_hex(16), owner, run.plan_id, self.core.signer.expiry(run.plan_id), cut.cut,
                       crossing, model.tail(cut.cut), vocab, min(context, self.limits.positions),
                       cache_bytes_per_position(attention), run.sampling or sampling.Sampling(), KVCache(context),
                       served=served)

    def _register(self, session: Session) -> None:
        with self._lock:
            mine = sum(1 for s in self._sessions.values() if s.owner == session.owner)
            if mine >= self.limits.sessions_per_client:
                raise ResourceExhausted(f"this client holds {mine} generation sessions, the most allowed "
                                        f"(ServerLimits.max_generation_sessions_per_client); close one first")
            if len(self._sessions) >= self.limits.sessions:
                raise ResourceExhausted(f"the server holds {len(self._sessions)} generation sessions, the most "
                                        f"allowed (ServerLimits.max_generation_sessions); try again later")
            self._sessions[session.id] = session
        log.info("generation session opened", extra={"fields": {"session": session.id, "cut": session.cut}})

    def _continue(self, session: Session, run: Run, new: bool) -> Iterator[Answer]:
        if not run.tensors:                 # closing is allowed at any position: a device that lost track closes
            if not run.close:
                raise InvalidArgument("the run carries no tensors; send the positions' crossing tensors, or close")
            self.close(session)
            yield Answer(session.id, session.cache.position, 0, 0.0, 0, last=True, closed=True)
            return
        if run.position != session.cache.position:
            raise FailedPrecondition(f"generation session {session.id} holds {session.cache.position} positions; "
                                     f"the run starts at {run.position} (answered already, or a gap): continue at "
                                     f"{session.cache.position} or resend the context in a new session")
        length = self._check(session, run)
        if run.max_new_tokens > 1 and session.cut != 0:
            raise InvalidArgument(f"max_new_tokens {run.max_new_tokens}: at cut {session.cut} the device runs its "
                                  f"head on every token, so each run answers one")
        if run.draft_count and run.max_new_tokens > 1:
            raise InvalidArgument(f"a run with drafts is answered once; max_new_tokens {run.max_new_tokens} must be 0 "
                                  f"or 1")
        room = session.context - run.position - length
        if room < 0:
            raise OutOfRange(f"positions {run.position} + {length} pass the session's context of {session.context} "
                             f"positions")
        fed = min(run.max_new_tokens - 1, room)       # tokens the server feeds back itself (cut 0)
        x = [tensors.decode_message(data, coding, 1, (length,) + t.sample_shape[1:], t.quantizer)
             for t, (_, _, _, data, coding) in zip(session.crossing, run.tensors)]              # [1, T, ...]
        if session.cut == 0:
            ids = x[0]
            if not (np.all(np.floor(ids) == ids) and np.all(ids >= 0) and np.all(ids < session.vocab)):
                raise InvalidArgument(f"token ids must be whole numbers 0 .. {session.vocab - 1}")
        drafts, q = self._drafts(session, run, length, x)
        if new:                            # a session counts once its first run is known to be well formed
            self._register(session)
        try:
            self._reserve(session, session.per_position * (run.position + length + fed) - session.reserved)
        except ResourceExhausted:
            if new:
                self.close(session)
            raise
        if drafts:
            yield self._verify(session, run, x, drafts, q)
            return
        stops = set(run.stop_tokens)
        for i in range(fed + 1):
            scores, item = self._tail(session, x)                                                   # [T, vocab]
            picked = time.perf_counter()
            position = session.cache.position
            token = sampling.pick(scores[-1], session.sampling, position)
            last = i == fed or token in stops
            if last and run.close:
                self.close(session)
            share = item.tail_s / max(item.batch_inputs, 1) + time.perf_counter() - picked   # its part of a pass
            now = time.perf_counter()
            if i > 0 and item.batch_inputs == 1 and session.served is not None:   # a streamed token, its pass alone:
                session.served.observe_streamed_step(now - answered)             # since the answer before, its
            answered = now                                                       # sending included
            yield Answer(session.id, position, token, share, session.cache.nbytes, last, closed=last and run.close)
            if last:
                return
            x = [np.array([[token]], np.float32)]                                                   # [1, 1]

    def _drafts(self, session: Session, run: Run, length: int, x) -> tuple[list[int], np.ndarray | None]:
        """(the drafted tokens, their draft probabilities [k, vocab] or None when greedy), checked."""
        k = run.draft_count
        if not k:
            if run.draft_probabilities:
                raise InvalidArgument("draft probabilities came without drafts (draft_count 0)")
            return [], None
        if session.cut != 0:
            raise InvalidArgument(f"drafts are verified where the server runs the whole model (cut 0); this session "
                                  f"cuts at {session.cut}")
        if not 1 <= k <= self.limits.draft_tokens or k >= length:
            raise InvalidArgument(f"draft_count {k}: at most {self.limits.draft_tokens} "
                                  f"(ServerLimits.max_draft_tokens), and fewer than the run's {length} positions (the "
                                  f"context's last token comes first)")
        drafts = [int(t) for t in x[0][0, -k:]]
        if session.sampling.greedy:
            if run.draft_probabilities:
                raise InvalidArgument("draft probabilities are for sampling; this session decodes greedily")
            return drafts, None
        expected = 4 * k * session.vocab
        if len(run.draft_probabilities) != expected:
            raise InvalidArgument(f"draft probabilities hold {len(run.draft_probabilities):,} bytes; {k} drafts over a "
                                  f"vocabulary of {session.vocab} take {expected:,} (float32)")
        q = np.frombuffer(run.draft_probabilities, "<f4").reshape(k, session.vocab)        # [k, vocab]
        return drafts, speculative.check_draft_probabilities(q, drafts)

    def _verify(self, session: Session, run: Run, x, drafts: list[int], q) -> Answer:
        """The target over the run in one pass; the drafts it accepts kept in the cache, the rest rolled back."""
        k = len(drafts)
        scores, item = self._tail(session, x)                         # [T, vocab]
        held = session.cache.position                                # run.position + T
        picked = time.perf_counter()
        m, token = speculative.verify(scores[-(k + 1):], drafts, q, session.sampling, held - k)
        session.cache.truncate(held - k + m)                          # the drafts not accepted leave the cache
        if run.close:
            self.close(session)
        share = item.tail_s / max(item.batch_inputs, 1) + time.perf_counter() - picked   # its part of a shared pass
        if run.position > 0 and item.batch_inputs == 1 and session.served is not None:    # a round after the first,
            session.served.observe_verification(share)                                   # its pass alone
        return Answer(session.id, session.cache.position, token, share, session.cache.nbytes, True, closed=run.close,
                      accepted=m)

    def _tail(self, session: Session, x: list[np.ndarray]) -> tuple[np.ndarray, batching.Item]:
        """(the scores [T, vocab] of the session's tail over its run's tensors x, each [1, T, ...], the batcher's
        record of the run): with --batch-max-inputs, in one pass with other sessions' runs of the same tail."""
        item = batching.Item(x, 1, id(session), context=session)

        def together(items):
            return [[s] for s in joint_runs.run_ragged(session.tail, [(i.context.cache, i.x) for i in items])]

        if self.core.batcher is None:
            batching.run_alone(item, together, self.core.admission.slot, joint=True)
        else:
            self.core.batcher.run(("generate", id(session.tail)), item, together, self.core.admission.slot,
                                  self.core.batcher.max_inputs, joint=True)
        return item.outputs[0], item

    def _check(self, session: Session, run: Run) -> int:
        """The run's length T, with every declared name, shape, bit width and byte count checked."""
        if len(run.tensors) != len(session.crossing):
            raise InvalidArgument(f"the plan sends {len(session.crossing)} tensor(s) across the cut "
                                  f"({', '.join(t.name for t in session.crossing)}), the run holds {len(run.tensors)}")
        if len(run.stop_tokens) > MAX_STOP_TOKENS or any(not 0 <= t < session.vocab for t in run.stop_tokens):
            raise InvalidArgument(f"at most {MAX_STOP_TOKENS} stop tokens, each 0 .. {session.vocab - 1}")
        lengths = set()
        for expected, (name, sample_shape, bits, data, coding) in zip(session.crossing, run.tensors):
            shape = tuple(int(d) for d in sample_shape)
            if name != expected.name or shape[1:] != expected.sample_shape[1:] or len(shape) != len(
                    expected.sample_shape) or bits != expected.bits or not shape or shape[0] < 1:
                raise InvalidArgument(f"tensor {shown(name)} {list(shape)[:8]} at {bits} bits does not match the "
                                      f"plan's {expected.name!r} [T, {', '.join(map(str, expected.sample_shape[1:]))}]"
                                      f" at {expected.bits} bits, T >= 1")
            if shape[0] > session.context - run.position:
                raise OutOfRange(f"positions {run.position} + {shape[0]} pass the session's context of "
                                 f"{session.context} positions")
            tensors.check_batch(1, shape, bits, len(data), self.core.settings.max_activation_elements, coding)
            lengths.add(shape[0])
        if len(lengths) != 1:
            raise InvalidArgument(f"the run's tensors disagree on the number of positions: {sorted(lengths)}")
        return lengths.pop()

    def _reserve(self, session: Session, more: int) -> None:
        if more <= 0:
            return
        if session.reserved + more > self.limits.session_cache_bytes:
            raise ResourceExhausted(f"the session's cache would hold {session.reserved + more:,} bytes; one session "
                                    f"may hold {self.limits.session_cache_bytes:,} "
                                    f"(ServerLimits.max_session_cache_bytes)")
        with self._lock:
            if self._reserved + more > self.limits.cache_bytes:
                raise ResourceExhausted(f"the sessions' caches would hold {self._reserved + more:,} bytes; the server "
                                        f"allows {self.limits.cache_bytes:,} (ServerLimits.max_generation_cache_bytes)"
                                        f"; try again later")
            self._reserved += more
            session.reserved += more

    def close(self, session: Session) -> None:
        if self.core.batcher is not None:
            self.core.batcher.forget(("generate", id(session.tail)), id(session))
        with self._lock:
            if self._sessions.pop(session.id, None) is not None:
                self._reserved -= session.reserved
                session.reserved = 0
                session.cache.layers.clear()

    def expire(self, now: float | None = None) -> int:
        """Close the sessions idle longer than the limit; returns how many."""
        if self.limits.idle_s <= 0:
            return 0
        now = time.monotonic() if now is None else now
        idle = [s for s in list(self._sessions.values()) if now - s.used > self.limits.idle_s and not s.lock.locked()]
        for session in idle:
            self.close(session)
        return len(idle)
