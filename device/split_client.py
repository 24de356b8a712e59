"""The library API for applications on a board: classify your own inputs through the split.

    from qpart.device import SplitClient

    with SplitClient("10.0.0.5:50051", "resnet8-96", budget=1.0, profile="rpi4") as qp:
        result = qp.classify(open("frame.png", "rb").read())      # or a uint8 image, or the input tensor
        print(result.class_name, result.label)

A language model's client generates instead: `qp.generate("Q: what is love?", max_new_tokens=100).text`.

The first classify (or generate) plans (the link is probed and this device's MAC rate measured unless given),
fetches the head (or takes it from the cache) and runs it; later calls reuse both until `replan()`,
or, with adapt=True, until the client's own traffic (or a probe of the idle link every 2 s) shows a
lasting change of the link's rate: the next classify then plans for the link as measured
(qpart.device.linkwatch).
Failover across several server addresses, retries and exactly-once resends are the agent's
(qpart.device.agent). Safe to share between threads: planning is serialized, inferences are not.
"""
import logging
import dataclasses
import pathlib
import threading
import time
from dataclasses import dataclass

import numpy as np

from qpart.common import guard, messages, policies, profiles, sampling, tokenizer
from qpart.common.costmodel import DeviceProfile, LinkProfile, Objective
from qpart.common.errors import InvalidArgument
from qpart.device import compute, probe, speculative
from qpart.device.agent import DeviceAgent, RunReport
from qpart.device.cache import HeadCache
from qpart.device.client import ServerClient, TlsSettings
from qpart.device.generation import Generated, SplitGeneration
from qpart.device.linkwatch import LinkMonitor, MonitorSettings
from qpart.v1 import service_pb2 as spb

DEFAULT_CACHE = pathlib.Path.home() / ".cache" / "qpart" / "heads"
EXPIRY_MARGIN_S = 60.0    # plan again this long before the server stops serving a plan id
log = logging.getLogger("qpart.device.split_client")


@dataclass
class Result:
    label: int                  # index of the highest score
    class_name: str             # its name, when the model has names ("" otherwise)
    scores: np.ndarray          # the model's first output (a classifier's class scores), float32


def decode_image(data: bytes) -> np.ndarray:
    """PNG, JPEG or WebP bytes as uint8 pixels [H, W] (gray) or [H, W, 3] (needs Pillow), through the input guard
    (qpart.common.guard: the header checked against its limits before a pixel is decoded)."""
    return guard.decode_image(bytes(data))


@dataclass
class Text:
    text: str                   # the generated text (up to an end-of-document token)
    tokens: list[int]           # the generated token ids
    generated: Generated        # timings, bytes sent and resends (qpart.device.generation)


class SplitClient:
    def __init__(self, server: str, model: str, budget: float = 1.0, profile: str | DeviceProfile = "rpi4", *,
                 link: LinkProfile | None = None, objective: Objective = Objective(), policy: str = policies.QPART,
                 expected_inputs: int = 1000, token: str | None = None, tls: TlsSettings | None = None,
                 cache_dir: str | pathlib.Path | None = DEFAULT_CACHE, backend: str = "auto",
                 measure_compute: bool = True, timeout_s: float = 30.0, retries: int = 6, deadline_s: float = 0.0,
                 adapt: bool | MonitorSettings = False, fixed: spb.FixedPlan | None = None,
                 generation: tuple | None = None, drafts: int = speculative.MAX_K):
        """server: host:port (several, comma-separated, are replicas); link: None probes it; profile: a bundled
        name or a TOML file, for energy and (with measure_compute=False) speed; expected_inputs: how many
        inferences the head is priced to be reused for; deadline_s: > 0, the server sheds (DeadlineExceeded) a
        batch it cannot answer within this many seconds of reading it; adapt: follow the link (True, or the
        monitor's settings), see the module docstring; fixed: this split instead of the planner's choice (cut and
        bit widths; priced, and certified only where it is a catalog split); generation: a language model's
        (prompt tokens, new tokens[, temperature]) the plan is priced for (None: the server's default, 32 and 64,
        greedy); drafts: the most tokens this device drafts per round for a language model's speculative drafting
        (0: it never drafts; the plan says whether it does, and with which draft)."""
        self.model, self.budget, self.policy, self.fixed = model, budget, policy, fixed
        self.generation = spb.GenerationShape(prompt_tokens=generation[0], new_tokens=generation[1],
                                              temperature=generation[2] if len(generation) > 2 else 0.0) \
            if generation is not None else None
        self.drafts = drafts
        self.objective, self.expected_inputs = objective, expected_inputs
        self.device = profiles.load_device(profile) if isinstance(profile, str) else profile
        self._link, self._measure = link, measure_compute
        self.client = ServerClient(server, timeout_s=timeout_s, token=token, tls=tls, retries=retries)
        self.agent = DeviceAgent(self.client, HeadCache(cache_dir), backend=backend, deadline_s=deadline_s)
        self._lock = threading.Lock()
        self._info: spb.ModelInfo | None = None
        self._state: tuple | None = None     # (plan, executor): swapped whole when replanning
        self._watch = MonitorSettings() if adapt is True else adapt or None
        self._monitor: LinkMonitor | None = None
        self._seen: LinkProfile | None = None     # a lasting change the monitor saw: the next classify plans for it
        self._closed = threading.Event()
        self._prober: threading.Thread | None = None
        self._generation: SplitGeneration | None = None      # the language-model path of the current plan

    @property
    def info(self) -> spb.ModelInfo:
        if self._info is None:
            self._info = self.agent.model_info(self.model)
        return self._info

    @property
    def plan(self) -> spb.PlanResponse:
        return self._ready()[0]

    @property
    def backend(self) -> str:
        """The backend running the current head (numpy, torch, torch-cuda); "none" when the plan sends the input
        and the server runs the whole model; "" before the first plan."""
        if self._state is None:
            return ""
        return self._state[1].backend.name if self._state[1] is not None else "none"

    def measured(self) -> tuple[DeviceProfile, LinkProfile]:
        """The device (its MAC rate measured for the backend unless measure_compute is off) and the link."""
        if self._measure and not self.device.macs_per_second:   # auto resolves to the backend priced
            found = compute.measure(self.agent.backend)
            self.agent.backend = found.backend
            if found.macs_per_second:
                self.device = dataclasses.replace(self.device, macs_per_second=found.macs_per_second,
                                                  seconds_per_node=found.seconds_per_node)
        if self._link is None:
            self._link = probe.measure_link(self.client)
        return self.device, self._link

    def replan(self, expected_inputs: int | None = None, link: LinkProfile | None = None) -> spb.PlanResponse:
        """Ask for a new plan (for a changed workload or link) and load its head; returns the plan."""
        with self._lock:
            if expected_inputs is not None:
                self.expected_inputs = expected_inputs
            if link is not None:
                self._link = link
            return self._replan()[0]

    def _replan(self) -> tuple:
        device, link = self.measured()
        device = dataclasses.replace(device, max_draft_tokens=self.drafts)
        request = spb.PlanRequest(model=self.model, device=messages.device_to_pb(device),
                                  link=messages.link_to_pb(link), accuracy_budget=self.budget,
                                  weights=messages.objective_to_pb(self.objective),
                                  inferences_per_head=max(int(self.expected_inputs), 1),
                                  policy=spb.FIXED if self.fixed is not None else policies.to_enum(self.policy),
                                  fixed=self.fixed, generation=self.generation)
        plan = self.agent.plan(request)
        executor, _ = self.agent.obtain_head(plan)
        self._state = (plan, executor)
        if self._watch is not None:
            self._seen = None
            if self._monitor is None:
                self._monitor = LinkMonitor(link, self._watch)
                self._prober = threading.Thread(target=self._probe_while_idle, daemon=True, name="qpart-link-probe")
                self._prober.start()
            self._monitor.reset(link)
        return self._state

    def _observe(self, sample) -> None:
        self._monitor.add(sample)
        self._seen = self._seen or self._monitor.changed()

    def _probe_while_idle(self) -> None:
        while not self._closed.wait(self._watch.probe_interval_s):
            if self._seen is None and self._monitor.idle():
                seen = self._monitor.probe(self.client, probe.probe_sample)
                if seen is not None:
                    self._seen = seen[0]

    def _ready(self) -> tuple:
        """(plan, head executor), planning first if there is no plan yet, its id expires within a minute or
        (adapt) the link changed lastingly."""
        if self._state is None or self._expiring(self._state[0]) or self._seen is not None:
            with self._lock:
                if self._seen is not None:
                    self._link = self._seen
                    self._replan()
                    log.info("planned %s again (the link changed to %.2f Mbit/s): cut %d", self.model,
                             self._link.uplink_bps / 1e6, self._state[0].cut)
                elif self._state is None or self._expiring(self._state[0]):
                    why = "first plan" if self._state is None else "its plan id expires within a minute"
                    self._replan()
                    log.info("planned %s (%s): cut %d", self.model, why, self._state[0].cut)
        return self._state

    def _replan_now(self) -> tuple:
        """(plan, executor) planned anew: the server refused the current plan id mid-stream."""
        with self._lock:
            state = self._replan()
        log.info("planned %s again (the server refused the plan id): cut %d", self.model, state[0].cut)
        return state

    @staticmethod
    def _expiring(plan: spb.PlanResponse) -> bool:
        return bool(plan.plan_id_expires_at) and time.time() > plan.plan_id_expires_at - EXPIRY_MARGIN_S

    def inputs(self, x) -> tuple[np.ndarray, bool]:
        """(the model's float32 inputs [n, *input_shape], whether x was one input) from image bytes, a list of
        them, uint8 pixels (one image [H, W] or [H, W, C] with C in 1, 3, 4; a batch [N, H, W] or [N, H, W, C])
        or the input tensor itself (float, one or a batch)."""
        shape = tuple(self.info.input.shape)
        if isinstance(x, (bytes, bytearray)):
            x, single = decode_image(bytes(x))[None], True
        elif isinstance(x, (list, tuple)) and x and isinstance(x[0], (bytes, bytearray)):
            images = [decode_image(bytes(b)) for b in x]
            if len({img.shape for img in images}) != 1:
                raise InvalidArgument("the images differ in size; classify them one by one")
            x, single = np.stack(images), False
        else:
            x = np.asarray(x)
            # uint8: [H, W] or [H, W, C] (C in 1, 3, 4) is one image, [N, H, W] or [N, H, W, C] a batch
            single = x.shape == shape or (x.dtype == np.uint8 and (x.ndim == 2 or x.ndim == 3 and x.shape[2] in (1, 3, 4)))
            if x.dtype != np.uint8 and x.shape in (shape, x.shape[:1] + shape):
                batch = x[None] if x.shape == shape else x
                return np.ascontiguousarray(batch, np.float32), x.shape == shape
            if x.dtype != np.uint8:
                raise InvalidArgument(f"give the model's input {list(shape)} (float, one or a batch), uint8 pixels, "
                                      f"or image bytes; got {x.dtype} {list(x.shape)}")
            x = x[None] if single else x
        return messages.preprocessing_from_pb(self.info.preprocessing).apply(x), single

    def classify(self, x, batch_size: int = 16) -> Result | list[Result]:
        """The model's answer for one input, or a list of answers for a batch (see `inputs` for the forms)."""
        inputs, single = self.inputs(x)
        plan, executor = self._ready()
        scores = self.agent.classify(plan, executor, inputs, RunReport.for_plan(plan), batch_size=batch_size,
                                     observe=self._observe if self._monitor is not None else None,
                                     replan=self._replan_now)
        names = list(self.info.class_names)
        results = [Result(int(s.argmax()), names[int(s.argmax())] if int(s.argmax()) < len(names) else "", s)
                   for s in scores]
        return results[0] if single else results

    def generate(self, prompt: str | list[int], max_new_tokens: int = 64, temperature: float = 0.0, seed: int = 0,
                 stop_at_end: bool = True, on_token=None) -> Text:
        """A language model's continuation of the prompt (text, or token ids), through the plan: greedy at
        temperature 0, else drawn with the seed (qpart.common.sampling). stop_at_end: stop after the tokenizer's
        end-of-document id; on_token(id) is called as each token arrives."""
        if self.info.tokenizer != tokenizer.KIND:
            raise InvalidArgument(f"model {self.model!r} has no tokenizer this device knows ({self.info.tokenizer!r}); "
                                  f"is it a language model?")
        words = tokenizer.ByteTokenizer()
        ids = words.encode(prompt) if isinstance(prompt, str) else [int(t) for t in prompt]
        plan, executor = self._ready()
        if self._generation is None or self._generation.plan is not plan:
            self._generation = (speculative.planned(self.agent, plan, self.info) if plan.HasField("drafting")
                                else SplitGeneration(self.client, plan, executor, self.info))
        out = self._generation.generate(ids, max_new_tokens, sampling.Sampling(temperature, seed),
                                        (words.end_of_document,) if stop_at_end else (), on_token)
        return Text(words.decode(out.tokens), out.tokens, out)

    def close(self) -> None:
        self._closed.set()
        if self._prober is not None:
            self._prober.join()
        self.agent.close()
        self.client.close()

    def __enter__(self) -> "SplitClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
