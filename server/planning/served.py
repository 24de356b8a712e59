"""One model version as the server serves it, built by one loader and never changed after.

A ServedModel holds everything the server knows of one (model, version): the model, its catalog, what
`qpart catalog` measured beside it (coding.json, codecs.json), the catalog's splits priced with this
server's timings (qpart.server.planning.patterns), and those timings. The planner is a pure function of
a ServedModel, a request and the load (qpart.server.planning.planner.plan); the servicer asks one object,
ServedModels, for the served model of a name. When the timings change (re-timed on an idle machine) or a
model is retrained, ServedModels builds new ServedModel objects and swaps them in: a plan being made
keeps the object it started with, so nothing changes under it. The one thing a ServedModel gathers while it
serves is the time of the tokens it streams (a language model's prompt sent, the server generating) and of
the drafts it verifies: the planner prices streamed tokens with the median observed once there are enough, as
it serves them (the tail, the pick, the answer's encoding and sending), not with the step timed at start, and
a drafting round's pass likewise (a pass that follows a round trip of idle runs slower than one timed back to
back on some machines).
"""
import threading
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from qpart.common.costmodel import ServerProfile
from qpart.server.models.heads import HeadStore
from qpart.server.models.repository import Model, ModelRepository
from qpart.server.models.split import Split
from qpart.server.planning import catalog as catalog_mod
from qpart.server.planning import image_files
from qpart.server.planning import activation_coding, drafting
from qpart.server.planning.patterns import CodecCosts, ModelSpeed, Patterns, catalog_patterns

if TYPE_CHECKING:
    from qpart.server.planning.planner import Plan, PlanRequest

STREAMED_KEPT = 256      # streamed tokens whose times are kept per served model
STREAMED_FEWEST = 16     # observed tokens before their median prices streaming


@dataclass(frozen=True)
class ServedModel:
    model: Model
    catalog: catalog_mod.Catalog | None       # certified splits for these weights; None: not built yet
    patterns: Patterns | None                 # the catalog's splits priced for this server (None without catalog)
    masks: dict = field(default_factory=dict)   # policy -> which patterns it may use
    speed: ModelSpeed | None = None           # this server's timings of the model (None: priced at a MAC rate)
    codec: CodecCosts | None = None           # this server's activation codec timings
    server_speed: object = None               # the SpeedProfile the figures came from (for PlanResponse.server_speed)
    server: ServerProfile = ServerProfile()   # the static server profile the patterns were priced with
    coding: object = None                     # coding.json (zlib-coded message sizes), None when not offered
    codecs: object = None                     # codecs.json (the input as image files), None when not offered
    drafts: tuple = ()                        # a language model's measured drafts (drafts.json: drafting.Option)
    _variants: dict = field(default_factory=dict, compare=False, repr=False)   # head codings -> (patterns, masks)
    _streamed: deque = field(default_factory=lambda: deque(maxlen=STREAMED_KEPT), compare=False, repr=False)
    _verified: deque = field(default_factory=lambda: deque(maxlen=STREAMED_KEPT), compare=False, repr=False)

    @property
    def name(self) -> str:
        return self.model.name

    @property
    def version(self) -> str:
        return self.model.version

    def priced(self, head_codings: frozenset | None = None, heads: HeadStore | None = None
               ) -> tuple[Patterns, dict[str, np.ndarray]]:
        """(patterns, masks), or FailedPrecondition naming the command that builds the catalog. head_codings: for
        a device that decodes only these, the same splits priced with heads built that way (once per set: the
        heads go to `heads`, whence FetchHead serves them)."""
        if self.patterns is None:
            catalog_mod.require(self.model)
        if head_codings is None:
            return self.patterns, self.masks
        found = self._variants.get(head_codings)
        if found is None:
            heads = heads or HeadStore()
            entries = []
            for e in self.catalog.entries:
                built = heads.get(self.model, e.split, codings=head_codings) if e.split.ships_head else None
                entries.append(replace(e, head_bytes=built.size, head_hash=built.content_hash) if built else e)
            found = catalog_patterns(self.model, replace(self.catalog, entries=entries), self.server, self.codec,
                                     self.coding, self.codecs, self.speed, head_codings)
            found = self._variants.setdefault(head_codings, found)
        return found

    def entry(self, split: Split) -> catalog_mod.Entry | None:
        """The catalog entry of this split, if it is one."""
        return next((e for e in self.catalog.entries if e.split == split), None) if self.catalog else None

    def observe_streamed_step(self, seconds: float) -> None:
        """A token this server streamed (a language model sent its prompt, cut 0) took this long from the answer
        before it, the answer's sending included: observed while its pass ran alone."""
        self._streamed.append(seconds)

    def streamed_step(self) -> float | None:
        """The median of the last STREAMED_KEPT streamed tokens observed, once STREAMED_FEWEST were (else None)."""
        kept = list(self._streamed)
        return float(np.median(kept)) if len(kept) >= STREAMED_FEWEST else None

    def observe_verification(self, seconds: float) -> None:
        """A speculative-drafting round after the first (its drafts verified in one pass of the target, the pass
        alone) took this long on the server: the pass and the acceptance rule."""
        self._verified.append(seconds)

    def verification_pass(self) -> float | None:
        """The median of the last STREAMED_KEPT verification passes observed, once STREAMED_FEWEST were."""
        kept = list(self._verified)
        return float(np.median(kept)) if len(kept) >= STREAMED_FEWEST else None

    def tail_seconds(self, cut: int) -> float:
        """The server's part for one input from this cut as timed here (0: not timed)."""
        return self.speed.tail_seconds.get(cut, 0.0) if self.speed else 0.0


def load(model: Model, server: ServerProfile = ServerProfile(), codec: CodecCosts | None = None,
         speed: ModelSpeed | None = None, coding: bool = True, server_speed=None,
         repository: ModelRepository | None = None) -> ServedModel:
    """The served model: its catalog (and, with coding, coding.json and codecs.json) priced with these timings;
    with the repository, a language model's drafts (drafts.json) too."""
    catalog = catalog_mod.load(model)
    if catalog is None:
        return ServedModel(model, None, None, {}, speed, codec, server_speed, server)
    coded, images = (activation_coding.load(model), image_files.load(model)) if coding else (None, None)
    patterns, masks = catalog_patterns(model, catalog, server, codec, coded, images, speed)
    drafts = drafting.options(model, repository) if repository is not None else ()
    return ServedModel(model, catalog, patterns, masks, speed, codec, server_speed, server, coded, images, drafts)


class ServedModels:
    """The served models of one repository, priced at this server's timings: one ServedModel per model version,
    built on first use (one without a catalog is looked for again on the next)."""

    def __init__(self, repository: ModelRepository, server: ServerProfile = ServerProfile(), coding: bool = True,
                 max_draft_tokens: int = drafting.MAX_K):
        self.repository = repository
        self.max_draft_tokens = max_draft_tokens   # the server's limit on drafts per round (ServerLimits)
        self.server = server                    # the static server profile (its price, its MAC rate untimed)
        self.coding = coding                    # offer zlib-coded twins and image files where measured
        self._codec: CodecCosts | None = None
        self._speeds: dict[tuple[str, str], ModelSpeed] = {}
        self._info = None
        self._built: dict[tuple[str, str], ServedModel] = {}
        self._lock = threading.Lock()

    def get(self, name: str) -> ServedModel:
        """The served model of this name's current version (NotFound for an unknown name)."""
        model = self.repository.get(name)
        key = (model.name, model.version)
        with self._lock:
            found = self._built.get(key)
            codec, speed, info = self._codec, self._speeds.get(key), self._info
        if found is not None and found.catalog is not None:
            return found
        found = load(model, self.server, codec, speed, self.coding, info, self.repository)
        with self._lock:
            if found.catalog is not None and self._codec is codec and self._speeds.get(key) is speed:
                found = self._built.setdefault(key, found)
        return found

    def plan(self, request: "PlanRequest", load: float = 1.0, heads: HeadStore | None = None,
             may_use=lambda name: True) -> "Plan":
        """The planner's answer for a request to the served model it names (qpart.server.planning.planner.plan);
        may_use(name): whether the requester may run that model (a draft), as its identity allows."""
        from qpart.server.planning import planner
        return planner.plan(self.get(request.model), request, load, self.server, heads,
                            planner.Drafting(self.max_draft_tokens, may_use))

    def __iter__(self):
        return (self.get(name) for name in self.repository.names())

    def set_speed(self, codec: CodecCosts | None, speeds: dict[tuple[str, str], ModelSpeed], info=None) -> None:
        """Price with these timings from now on: {(name, version): ModelSpeed}; info: where they came from."""
        with self._lock:
            self._codec, self._speeds, self._info = codec, dict(speeds), info
            self._built = {}

    def forget(self) -> None:
        """Build every served model again on next use (catalogs rebuilt, files measured again)."""
        with self._lock:
            self._built = {}
