"""The transport-free core of the qpart server: models, plans, heads and the tail executor.

The gRPC servicer only decodes messages, calls these methods and encodes the results. Every method
that touches a model takes the caller's Identity and checks that it may use it.
"""
import functools
import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from qpart.common import images, runtime, tensors, timing
from qpart.common.errors import (DeadlineExceeded, FailedPrecondition, InvalidArgument, OutOfRange,
                                 ResourceExhausted)
from qpart.common.names import shown
from qpart.server.models.heads import BuiltHead, HeadStore
from qpart.server.models.repository import CutTensor, Model, ModelRepository
from qpart.server.planning.planner import Plan, PlanRequest
from qpart.server.planning.served import ServedModel, ServedModels
from qpart.server.planning.plans import PlanSigner, PlanSpec
from qpart.server.serving import speed, speed_profile
from qpart.server.serving.speed_profile import SpeedProfile
from qpart.server.serving.load import ServerLoad
from qpart.server.serving.admission import Admission, StreamGuard
from qpart.server.serving import batching, generation
from qpart.server.serving.batching import TailBatcher
from qpart.server.serving.auth import ANYONE, Authenticator, Identity
from qpart.server.serving.settings import ServerSettings

log = logging.getLogger("qpart.server.core")
MAX_LOGGED_RUNS = 64
MAX_DEADLINE_S = 3600.0


@dataclass
class InferSession:
    """A plan resolved once for a whole Infer stream."""
    token: str
    served: ServedModel            # the model version as served when the stream opened
    spec: PlanSpec
    tensors: list[CutTensor]       # what crosses the cut, in order
    tail: torch.nn.Module
    classifier: bool               # answers carry the top-1 label of the first output
    most: int                      # most inputs one batch may hold (QpartCore.max_batch_inputs)
    expires: float = math.inf      # the plan id's expiry (unix seconds): checked on every message of the stream


@dataclass
class InferResult:
    request_ids: list[int]
    outputs: list[np.ndarray]      # per model output: [n, *shape] float32
    labels: np.ndarray | None      # [n] top-1 of the first output (classifiers), else None
    compute_s: float               # the tail's run
    queue_s: float                 # waiting for a compute slot (and for others to join the batch)
    shed: str = ""                 # why the batch was not answered (its deadline), "" when it was


@dataclass
class Admitted:
    """A message checked and decoded, before its tail runs (QpartCore.admit)."""
    session: InferSession
    request_ids: object            # the message's request ids, as it carries them
    item: batching.Item            # its decoded tensors, deadline and (once run) outputs
    tail: object                   # tail(x) -> outputs: the plan's tail on a batch
    lane: tuple                    # (model, version, cut): the batcher's lane


@dataclass(frozen=True)
class HeadChunk:
    content_hash: str
    total_bytes: int
    offset: int
    data: bytes


class InferStream:
    """The rules of one Infer stream: the first message names the plan, later ones keep to it, and none is
    answered after the plan id expires (FAILED_PRECONDITION: the device plans again and resends)."""

    def __init__(self, core: "QpartCore", identity: Identity):
        self.core, self.identity = core, identity
        self.session: InferSession | None = None

    def infer(self, plan_id: str, request_ids, tensors, deadline_s: float = 0.0) -> InferResult:
        """tensors: (name, sample_shape, bits, data) of each crossing tensor, as the batch carries them;
        deadline_s: seconds from now within which the answer is of use (0: none)."""
        return self.core.infer(self.session_for(plan_id), request_ids, tensors, deadline_s)

    def session_for(self, plan_id: str) -> InferSession:
        """The stream's session: opened on its first message, checked on every later one."""
        if self.session is None:
            self.session = self.core.open_session(plan_id, self.identity)
        elif plan_id and plan_id != self.session.token:
            raise InvalidArgument("the plan id changed within one Infer stream; open a new stream per plan")
        else:                  # verified when the stream opened; its expiry still holds while the stream stays open
            self.core.signer.check_expiry(self.session.expires)
        return self.session


class QpartCore:
    def __init__(self, settings: ServerSettings, repository: ModelRepository | None = None):
        self.settings = settings
        self._drain_ends_streams = math.inf  # time.monotonic() from which Infer streams end (RunningServer.stop)
        self.repository = repository or ModelRepository(settings.models)
        self.heads = HeadStore(settings.head_cache_bytes)
        self.models = ServedModels(self.repository, settings.profile,      # what the servicer asks for by name
                                   max_draft_tokens=settings.max_draft_tokens)
        self.auth = Authenticator.from_file(settings.devices, mutual_tls=settings.tls_client_ca is not None)
        self.admission = Admission(settings.compute_slots or runtime.usable_cores(), settings.max_queued)
        self.load = ServerLoad(settings.load_window_s)
        total = settings.max_streams or max(settings.workers - 8, 1)
        self.streams = StreamGuard(settings.max_streams_per_client or max(total * 3 // 4, 1),
                                   settings.max_streams_per_connection, settings.stream_idle_s)
        self.signer = PlanSigner.for_repository(self.repository.root, settings.plan_key_file, settings.plan_id_ttl_s)
        self.batcher = (TailBatcher(settings.batch_max_inputs, settings.batch_delay_ms / 1e3)
                        if settings.batch_max_inputs > 1 else None)
        self.generation = generation.Generation(self, generation.Limits(
            settings.generation_sessions, settings.generation_sessions_per_client, settings.generation_positions,
            settings.session_cache_bytes, settings.generation_cache_bytes, settings.generation_idle_s,
            settings.max_draft_tokens))
        self._closed = threading.Event()
        self._recheck: threading.Thread | None = None

    def measure_speed(self, clock=time.perf_counter, load: timing.CpuLoad | None = None) -> SpeedProfile:
        """The server's speed figures (each model's tail from every catalog cut, the activation codecs, the MAC
        rate): this machine's entry in the shared speed profile, with what it lacks timed now (everything with
        --remeasure-speed); the planner prices the server's part and the device's encoding with them. Figures
        timed on a busy machine are provisional: timed again once it is idle (--speed-recheck-s)."""
        path = self.settings.speed_profile or self.repository.root / speed_profile.FILE_NAME
        key = speed_profile.machine_key(torch.get_num_threads(), torch.__version__)
        base = None if self.settings.remeasure_speed else speed_profile.read(path, key)
        profile = speed.measure(list(self.repository), self._catalog_cuts, base, self.settings.speed_idle_wait_s,
                                load, clock)
        if profile is not base:
            profile = speed_profile.share(path, key, profile, replace=self.settings.remeasure_speed)
        self.apply_speed(profile)
        if profile.provisional and self.settings.speed_recheck_s > 0 and self._recheck is None:
            self._recheck = threading.Thread(target=self._time_when_idle, args=(path, key, load, clock),
                                             name="qpart-speed-recheck", daemon=True)
            self._recheck.start()
        return profile

    def _catalog_cuts(self, model: Model) -> list[int]:
        catalog = self.models.get(model.name).catalog
        return list(catalog.cuts) if catalog else []

    def _time_when_idle(self, path, key, load, clock) -> None:
        load = load or timing.CpuLoad()
        while not self._closed.wait(self.settings.speed_recheck_s):
            busy = load.busy()
            if busy is not None and busy > timing.BUSY_THRESHOLD:
                continue
            profile = speed.measure(list(self.repository), self._catalog_cuts, None, 0.0, load, clock)
            if not profile.provisional:
                self.apply_speed(speed_profile.share(path, key, profile))
                log.info("speed timed again on the idle machine")
                return

    def apply_speed(self, profile: SpeedProfile) -> None:
        """Price plans with these figures from now on (every served model is priced again)."""
        codec, speeds = speed.priced_with(profile, list(self.repository), self._catalog_cuts,
                                          self.settings.profile.mac_rate)
        self.models.set_speed(codec, speeds, profile)

    def close(self) -> None:
        """Stop the background threads (re-timing, the idle-stream watchdog): the server stopped serving."""
        self._closed.set()
        self.streams.stop()
        if self._recheck is not None:
            self._recheck.join(timeout=30)

    def warm_heads(self) -> int:
        """Build and cache the head of every catalog split; returns how many were built."""
        built = 0
        for served in self.models:
            model, catalog = served.model, served.catalog
            for entry in catalog.entries if catalog else []:
                if entry.split.ships_head:
                    head = self.heads.get(model, entry.split, pin=True, stored=entry.head_hash)
                    if head.content_hash != entry.head_hash:
                        raise FailedPrecondition(f"model {model.name!r}: the catalog's head for cut "
                                                 f"{entry.split.cut} does not match the head built now; "
                                                 f"rebuild the catalog with `qpart catalog {model.name} --force`")
                    built += 1
        return built

    def probe_reply(self, reply_bytes: int) -> bytes:
        limit = self.settings.max_message_bytes - 64
        if reply_bytes > limit:
            raise InvalidArgument(f"a probe reply of {reply_bytes} bytes exceeds the message limit of {limit} bytes")
        return bytes(reply_bytes)

    def list_models(self, name: str = "", identity: Identity = ANYONE) -> list[Model]:
        if name:
            identity.authorize(name)
            return [self.repository.get(name)]
        return [m for m in self.repository if "*" in identity.models or m.name in identity.models]

    def plan(self, request: PlanRequest, identity: Identity = ANYONE) -> Plan:
        identity.authorize(request.model)
        return self.models.plan(request, self.load.factor(), self.heads,
                                lambda name: "*" in identity.models or name in identity.models)

    def max_batch_inputs(self, model: Model, split) -> int:
        """Most inputs one activation batch of this split may hold: the batch, element and tail-memory limits."""
        cut = model.profile.cut(split.cut)
        limits = [self.settings.max_batch, self.settings.max_activation_elements // max(cut.elements, 1),
                  self.settings.max_tail_elements // max(cut.tail_peak_elements, 1)]
        return max(1, min(limits))

    def plan_id(self, plan: Plan) -> str:
        return self.signer.sign(plan.spec.token())

    def draft_plan_id(self, plan: Plan) -> str:
        """The signed id of a drafting plan's draft (its device-only split: FetchHead serves its head), else ""."""
        draft = plan.chosen.draft
        return self.signer.sign(draft.spec.token()) if draft is not None else ""

    def resolve(self, token: str, identity: Identity = ANYONE) -> tuple[ServedModel, PlanSpec]:
        spec = PlanSpec.parse(self.signer.verify(token))
        identity.authorize(spec.model)
        served = self.models.get(spec.model)
        return served, spec.check(served.model)

    def head(self, token: str, identity: Identity = ANYONE) -> BuiltHead:
        served, spec = self.resolve(token, identity)
        entry = served.entry(spec.split) if spec.head_codings is None else None    # catalog heads use every coding
        built = self.heads.get(served.model, spec.split, pin=entry is not None, stored=entry.head_hash if entry else "",
                               codings=spec.head_codings)
        if built is None:
            raise FailedPrecondition("this plan sends the input itself (cut 0); there is no head to fetch")
        return built

    def head_chunks(self, token: str, offset: int = 0, max_chunk_bytes: int = 0,
                    identity: Identity = ANYONE) -> Iterator[HeadChunk]:
        built = self.head(token, identity)
        total = built.size
        if offset > total:
            raise OutOfRange(f"offset {offset} is past the end of the {total}-byte head")
        largest = self.settings.head_chunk_bytes
        step = min(max(max_chunk_bytes or largest, self.settings.min_chunk_bytes), largest)
        view = memoryview(built.data)
        for start in range(offset, total, step):
            yield HeadChunk(built.content_hash, total, start, bytes(view[start:start + step]))

    def drain(self, grace_s: float) -> None:
        """The server is stopping: new RPCs are refused from now on and in-flight ones get grace_s seconds."""
        self._drain_ends_streams = time.monotonic() + grace_s / 2

    def streams_must_end(self) -> bool:
        """Infer streams still open half-way through the drain's grace end after their current answer
        (UNAVAILABLE: the device resends the rest elsewhere), rather than being cut mid-batch when it runs out."""
        return time.monotonic() >= self._drain_ends_streams

    def infer_stream(self, identity: Identity = ANYONE) -> InferStream:
        return InferStream(self, identity)

    def open_session(self, token: str, identity: Identity = ANYONE) -> InferSession:
        served, spec = self.resolve(token, identity)
        model = served.model
        cut = model.profile.cut(spec.split.cut)
        if not cut.runs_tail:
            raise FailedPrecondition("this plan runs the whole model on the device; there is nothing to infer here")
        return InferSession(token, served, spec, model.crossing(spec.split), model.tail(cut.cut),
                            model.card.get("task") == "classification", self.max_batch_inputs(model, spec.split),
                            self.signer.expiry(token))

    def _decode(self, session: InferSession, n: int, batch) -> list[np.ndarray]:
        """Check every declared name, shape, bit width and byte count of a batch's tensors, then decode them."""
        if len(batch) != len(session.tensors):
            raise InvalidArgument(f"the plan sends {len(session.tensors)} tensor(s) across the cut "
                                  f"({', '.join(t.name for t in session.tensors)}), the batch holds {len(batch)}")
        budget = self.settings.max_activation_elements
        for expected, (name, sample_shape, bits, data, coding) in zip(session.tensors, batch):
            shape = tuple(int(d) for d in sample_shape)
            if name != expected.name or shape != expected.sample_shape or bits != expected.bits:
                raise InvalidArgument(f"tensor {shown(name)} {list(shape)} at {bits} bits does not match the plan's "
                                      f"{expected.name!r} {list(expected.sample_shape)} at {expected.bits} bits")
            if images.is_image(coding) and session.spec.split.cut != 0:
                raise InvalidArgument(f"image codings carry the model's input (cut 0); this plan cuts at "
                                      f"{session.spec.split.cut}")
            budget -= tensors.check_batch(n, shape, bits, len(data), budget, coding)
        return [tensors.decode_message(data, coding, n, t.sample_shape, t.quantizer)                     # [n, *shape]
                for t, (_, _, _, data, coding) in zip(session.tensors, batch)]

    def admit(self, session: InferSession, request_ids, batch, deadline_s: float = 0.0) -> Admitted:
        """Check a message's batch and decode it: what runs the tail (alone or in a batch) and answers it."""
        received = time.perf_counter()
        n = len(request_ids)
        if n == 0:
            raise InvalidArgument("the activation batch holds no inputs (request_ids is empty)")
        if n > self.settings.max_batch:
            raise ResourceExhausted(f"the batch holds {n} inputs; the limit is {self.settings.max_batch}")
        most = session.most
        if n > most:
            raise ResourceExhausted(f"the batch holds {n} inputs; this plan's tail holds at most {most} at once "
                                    f"(PlanResponse.max_batch_inputs): send smaller batches")
        if not (math.isfinite(deadline_s) and 0 <= deadline_s <= MAX_DEADLINE_S):
            raise InvalidArgument(f"deadline_s must be seconds in [0, {MAX_DEADLINE_S:g}] (0: none), got {deadline_s:.6g}")
        deadline = received + deadline_s if deadline_s > 0 else math.inf
        x = self._decode(session, n, batch)
        item = batching.Item(x, n, id(session), deadline, session.served.tail_seconds(session.spec.split.cut), received)
        return Admitted(session, request_ids, item, functools.partial(self._run_tail, session),
                        (session.served.name, session.served.version, session.spec.split.cut))

    def infer(self, session: InferSession, request_ids, batch, deadline_s: float = 0.0) -> InferResult:
        admitted = self.admit(session, request_ids, batch, deadline_s)
        try:
            if self.batcher is None:
                batching.run_alone(admitted.item, admitted.tail, self.admission.slot)
            else:
                self.batcher.run(admitted.lane, admitted.item, admitted.tail, self.admission.slot, session.most)
        except DeadlineExceeded as e:
            return self.shed(admitted, e)
        return self.answer(admitted)

    @staticmethod
    def shed(admitted: Admitted, error: DeadlineExceeded) -> InferResult:
        return InferResult(list(admitted.request_ids), [], None, 0.0, time.perf_counter() - admitted.item.arrived,
                           shed=str(error))

    def answer(self, admitted: Admitted) -> InferResult:
        """The answer of an admitted message whose tail has run."""
        item, request_ids, n = admitted.item, admitted.request_ids, admitted.item.n
        late = time.perf_counter() - item.deadline
        if late > 0:
            return InferResult(list(request_ids), [], None, item.tail_s, item.waited_s,
                               shed=f"shed: the tail finished {1e3 * late:.1f} ms past the deadline; not sent")
        if log.isEnabledFor(logging.DEBUG):   # which inputs ran: the reliability report counts inputs computed twice
            log.debug("tail ran for %d input(s)", n, extra={"fields": {"computed": id_runs(request_ids)}})
        self.load.observe(n, item.tail_s + item.waited_s, item.need_s)
        labels = item.outputs[0].reshape(n, -1).argmax(axis=1) if admitted.session.classifier else None
        return InferResult(list(request_ids), item.outputs, labels, item.tail_s, item.waited_s)

    @staticmethod
    def _run_tail(session: InferSession, x: list[np.ndarray]) -> list[np.ndarray]:
        with torch.inference_mode():
            return [y.numpy() for y in session.tail(*[torch.from_numpy(t) for t in x])]


def id_runs(ids) -> list[list[int]]:
    """Request ids as [first, last] runs of consecutive ids (at most MAX_LOGGED_RUNS, then a final [-1, -1])."""
    runs: list[list[int]] = []
    for i in ids:
        i = int(i)
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        elif len(runs) == MAX_LOGGED_RUNS:
            return runs + [[-1, -1]]
        else:
            runs.append([i, i])
    return runs
