"""The catalog's splits as arrays, priced per request by the planner: what each split computes on the
device and the server, what it sends, what it costs the device's memory, and how its message is coded.

Built once per served model (qpart.server.planning.served) from its catalog, coding.json, codecs.json and
this server's timings; never changed after.
"""
import math
from dataclasses import dataclass, field, fields

import numpy as np

from qpart.common import images, packing, policies, quant, tensors
from qpart.common.costmodel import Costs, ServerProfile, Workload
from qpart.server.models.repository import Model
from qpart.server.models.split import Split
from qpart.server.planning import catalog as catalog_mod
from qpart.server.planning import image_files
from qpart.server.planning import activation_coding
from qpart.server.planning.plans import PlanSpec

ANSWER_OVERHEAD_BYTES = 16   # request id, label and framing of one Classification
INPUT_OVERHEAD_BYTES = 16    # request id and framing of one input in an ActivationBatch


@dataclass(frozen=True)
class ModelSpeed:
    """This server's timings of one model version (qpart.server.serving.speed): what its part costs here."""
    tail_seconds: dict               # cut -> the server's part for one input from it, s (a language model: one
                                     # generated token's step, after generation.WARM positions cached)
    preprocess_seconds: float = 0.0  # the device's preprocessing of one raw image, timed here, s
    prefill_seconds: dict = field(default_factory=dict)   # a language model's: cut -> the tail over a prompt of
                                                          # generation.PREFILL positions, s


@dataclass(frozen=True)
class CodecCosts:
    """The activation codec on this server, timed at start-up (qpart.server.serving.speed)."""
    per_width: dict          # bits -> (encode s, encode s per element, decode s, decode s per element)
    mac_rate: float          # this machine's float32 MAC rate: encode seconds * mac_rate = MAC-equivalents
    zlib: tuple[float, float] = (0.0, 0.0)   # seconds per packed byte to zlib-code it, and to inflate it

    def tensor(self, bits: int, elements: int) -> tuple[float, float]:
        """(device MAC-equivalents to encode, server seconds to decode) one tensor of one input."""
        e0, e1, d0, d1 = self.per_width.get(bits, (0.0,) * 4)
        return (e0 + e1 * elements) * self.mac_rate, d0 + d1 * elements

    def coding(self, raw_bytes: float) -> tuple[float, float]:
        """(device MAC-equivalents, server seconds) zlib adds to a message of raw_bytes packed bytes."""
        return self.zlib[0] * raw_bytes * self.mac_rate, self.zlib[1] * raw_bytes


@dataclass(frozen=True)
class Coded:
    """A split's message sent coded: its mean bytes per input and, for image files, the measured coding times."""
    bytes: float                  # mean bytes of one input's message
    coding: int = tensors.ZLIB
    quality: int = 0              # JPEG or WebP quality
    encode_s: float = 0.0         # image codings: seconds per input to encode, on a machine of rate mac_rate
    decode_s: float = 0.0         # image codings: seconds per input to decode there
    mac_rate: float = 0.0         # MACs per second of the machine that timed them (image codings)

    def costs(self, server_rate: float) -> tuple[float, float]:
        """(device MAC-equivalents, server seconds at server_rate MACs/s) of an image coding, which replaces
        the packing."""
        return self.encode_s * self.mac_rate, self.decode_s * self.mac_rate / server_rate


@dataclass
class Candidate:
    spec: PlanSpec
    kind: str                     # "qpart", "uniform8", "float", "fixed", "codec" or "draft"
    accuracy_drop: float | None   # certified bound on validation data; None when unknown (fixed plans)
    work: Workload
    costs: Costs
    memory_bytes: int             # device bytes: the serialized head, 4 per head parameter (decoded to float32),
                                  # 4 per element of the most activation elements alive at once in the head
    head_hash: str = ""
    rejected: str = ""
    chosen: bool = False
    held: bool = False            # the device holds its head: nothing is downloaded
    coding: int = tensors.RAW     # how its activations travel: raw, zlib-coded (qpart.server.planning.activation_coding), or
                                  # the input as image files (qpart.server.planning.image_files)
    quality: int = 0              # of a JPEG or WebP coding
    draft: object = None          # a drafting candidate's (kind "draft"): planner.DraftChoice, else None


@dataclass
class Patterns:
    """Candidate splits as arrays, one row per split, ready to be priced per request."""
    specs: list[PlanSpec]
    kinds: np.ndarray        # "qpart", "uniform8", "float" or "fixed"
    drop: np.ndarray         # certified top-1 drop, points (NaN: unknown)
    hashes: list[str]        # head content hashes ("" when nothing ships)
    work: Workload           # arrays
    memory: np.ndarray       # device bytes needed
    coding: np.ndarray       # per split: tensors.RAW, tensors.ZLIB or an image coding
    quality: np.ndarray      # per split: JPEG or WebP quality, else 0
    cut: np.ndarray = field(init=False)
    _rows: list = field(init=False, repr=False)   # the workload of each split as plain numbers

    def __post_init__(self):
        self.cut = np.array([s.split.cut for s in self.specs])
        columns = [np.broadcast_to(np.asarray(getattr(self.work, f.name)), (len(self.specs),)).tolist()
                   if getattr(self.work, f.name) is not None else [None] * len(self.specs) for f in fields(Workload)]
        self._rows = list(zip(*columns))

    @classmethod
    def of(cls, model: Model, specs: list[PlanSpec], kinds, drops, head_bytes, hashes, server: ServerProfile,
           codec: CodecCosts | None = None, coded=None, speed: "ModelSpeed | None" = None) -> "Patterns":
        """coded: per split, how its message is coded (Coded), or None to send it raw; speed: this server's
        timings of the model (None: its MACs priced at the server's rate)."""
        profile = model.profile
        coded = coded or [None] * len(specs)
        total = sum(n.macs for n in profile.nodes)
        cuts = [profile.cut(s.split.cut) for s in specs]
        splits = [s.split for s in specs]
        runs_tail = np.array([c.runs_tail for c in cuts])
        raw = np.array([sum(packing.packed_size(math.prod(shape), bits) for shape, bits in zip(c.shapes, s.activation_bits))
                        for c, s in zip(cuts, splits)], float)
        message = np.array([r if k is None else k.bytes for r, k in zip(raw, coded)], float)
        uplink = message + np.where(runs_tail, INPUT_OVERHEAD_BYTES, 0)
        head_bytes = np.asarray(head_bytes, float)
        answer = np.where(runs_tail, 4 * sum(math.prod(s) for s in profile.output_shapes) + ANSWER_OVERHEAD_BYTES, 0.0)
        device_macs = np.array([c.device_macs for c in cuts], float)
        server_seconds = None
        if speed is not None:              # timed on this server: the tail from each catalog cut
            server_seconds = np.array([speed.tail_seconds.get(c.cut, (total - c.device_macs) / server.mac_rate)
                                       if c.runs_tail else 0.0 for c in cuts])
        encode, decode = np.zeros(len(specs)), np.zeros(len(specs))
        for i, (c, s, k, r) in enumerate(zip(cuts, splits, coded, raw)):
            if k is not None and images.is_image(k.coding):      # measured offline: priced even without codec
                encode[i], decode[i] = k.costs(codec.mac_rate if codec else server.mac_rate)
            elif codec is not None:
                pairs = [codec.tensor(bits, math.prod(shape)) for shape, bits in zip(c.shapes, s.activation_bits)]
                z = codec.coding(r) if k is not None else (0.0, 0.0)
                encode[i], decode[i] = sum(e for e, _ in pairs) + z[0], sum(d for _, d in pairs) + z[1]
        if codec is not None and speed is not None:   # every plan's device preprocesses its raw image first
            encode += speed.preprocess_seconds * codec.mac_rate
        work = Workload(device_macs, total - device_macs, head_bytes, uplink, answer, runs_tail, server_seconds,
                        encode, decode)
        memory = head_bytes + np.array([4 * c.device_parameters + 4 * c.peak_elements for c in cuts], float)
        return cls(specs, np.asarray(kinds), np.asarray(drops, float), list(hashes), work, memory,
                   np.array([tensors.RAW if k is None else k.coding for k in coded], int),
                   np.array([0 if k is None else k.quality for k in coded], int))

    def candidate(self, costs: Costs, i: int, rejected: str = "", held: bool = False) -> Candidate:
        work = Workload(*self._rows[i])
        drop = None if np.isnan(self.drop[i]) else float(self.drop[i])
        return Candidate(self.specs[i], str(self.kinds[i]), drop, work, costs.at(i), int(self.memory[i]),
                         self.hashes[i], rejected, held=held,
                         coding=int(self.coding[i]), quality=int(self.quality[i]))


def catalog_patterns(model: Model, catalog: catalog_mod.Catalog, server: ServerProfile = ServerProfile(),
                     codec: CodecCosts | None = None, coding: activation_coding.Coding | None = None,
                     codecs: image_files.Codecs | None = None, speed: "ModelSpeed | None" = None,
                     head_codings: frozenset | None = None) -> tuple[Patterns, dict[str, np.ndarray]]:
    """The catalog's splits and, per policy, which of them it may use. With coding, each QPART split whose
    message zlib shrinks comes a second time, coded (after every raw split: ties keep the raw one); with
    codecs, the input comes once more per certified image setting (kind "codec"). The qpart policy may use
    them all, server_only_codec the image settings; the other baselines send what they always sent."""
    entries = sorted(catalog.entries, key=lambda e: e.split.cut)   # stable: argmin ties pick the earliest cut
    twins = [(e, coding.coded_bytes(e.split)) for e in entries if activation_coding.codable(model, e)] if coding else []
    rows = list(entries) + [e for e, k in twins if k is not None]
    coded = [None] * len(entries) + [Coded(k) for _, k in twins if k is not None]
    input_split = Split(0, (), (8,), catalog.config.get("granularity", quant.PER_CHANNEL))
    for s in codecs.settings if codecs else []:
        rows.append(catalog_mod.Entry("codec", input_split, None, s.drop_ucb, 0, ""))
        coded.append(Coded(s.bytes, s.code, s.quality, s.encode_s, s.decode_s, codecs.mac_rate))
    patterns = Patterns.of(model, [PlanSpec(model.name, model.version, e.split, head_codings) for e in rows],
                           [e.kind for e in rows], [e.certified_drop for e in rows],
                           [e.head_bytes for e in rows], [e.head_hash for e in rows], server, codec, coded, speed)
    cut, kinds, n = patterns.cut, patterns.kinds, model.num_nodes
    raw = patterns.coding == tensors.RAW
    masks = {policies.QPART: np.ones(len(rows), bool), "server_only": (cut == 0) & raw,
             "server_only_codec": kinds == "codec",
             "device_only": (kinds == "float") & (cut == n), "float_split": (kinds == "float") & raw,
             "uniform_int8": (kinds == "uniform8") & raw}
    return patterns, masks
