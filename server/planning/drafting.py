"""Speculative drafting as a plan: `drafts.json` beside a language model, and what drafting costs per generation.

`qpart catalog TARGET` measures, for each draft model of the repository (a smaller language model with the
target's tokenizer and vocabulary), the share of its drafts the target accepts on validation text at each of
TEMPERATURES, with its weights at each of WIDTHS bits (qpart.server.calibration.drafts). The planner offers
drafting with each measured (draft, width) and each k of 1 to the device's and server's limits as candidates
of the target's plan, priced with the same cost model as its splits:

    a        acceptance at the request's temperature (interpolated between those measured)
    E(k)     tokens one round yields: (1 - a^(k+1)) / (1 - a)   (k drafts, each kept while the ones before were,
             then one token of the target's own)
    rounds   R = N / E(k) for N new tokens (at least 1)
    device   the draft whole: its prompt prefill, then k steps a round (k positions, k runs of its nodes)
    uplink   the prompt's ids once, then per round the drafts and the target's last token (4 bytes each) and,
             sampling, the k drafts' distributions (k x vocab float32)
    server   the target over the prompt and the first round's drafts, then R - 1 passes of k + 1 positions
             (its timed step and prefill, as split decoding's cut 0 is priced; once this server has observed
             enough rounds, their median pass), R round trips and answers
    memory   the draft's head and float32 weights, its activations and its key/value cache for P + N positions
Drafting keeps the target's output (greedy: its tokens; sampling: its distribution), so its drop is 0.
"""
import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from qpart.common import quant
from qpart.common.costmodel import DeviceProfile, ServerProfile, Workload
from qpart.common.errors import NotFound
from qpart.common.kvcache import cache_bytes_per_position
from qpart.server.models.repository import Model, ModelRepository, corrupt, read_measurement, write_json
from qpart.server.models.split import Split, uniform
from qpart.server.planning import generation as gen

log = logging.getLogger("qpart.server.drafting")
DRAFTS_FILE = "drafts.json"
DRAFTS_VERSION = 1
TEMPERATURES = (0.0, 0.5, 1.0)     # sampling temperatures acceptance is measured at (0: greedy)
WIDTHS = (8, 4)                    # the drafts' weight bit widths measured (per output channel)
MAX_K = 16                         # the most drafts per round the planner weighs


@dataclass
class Measured:
    model: str                   # the draft model
    version: str                 # its weights' version when measured
    weight_bits: int             # every weight node at this width (32: float32)
    acceptance: list[float]      # share of drafts the target accepts, at each of Drafts.temperatures

    def at(self, temperatures: list[float], temperature: float) -> float:
        """Acceptance at this temperature: linear between those measured, the highest's above it."""
        return float(np.interp(min(temperature, temperatures[-1]), temperatures, self.acceptance))


@dataclass
class Drafts:
    model_version: str           # the target's weights it was measured with
    positions: int               # scored positions of the validation text
    temperatures: list[float] = field(default_factory=lambda: list(TEMPERATURES))
    measured: list[Measured] = field(default_factory=list)
    seconds: float = 0.0         # how long the measurement took

    def to_json(self) -> dict:
        return {"format_version": DRAFTS_VERSION, **asdict(self)}


def path(model: Model):
    return model.directory / DRAFTS_FILE


def save(model: Model, drafts: Drafts) -> None:
    write_json(path(model), drafts.to_json())


def read(model: Model) -> Drafts | None:
    """The target's drafts.json, or None when missing or measured for other weights of the target."""
    value = read_measurement(path(model), model.name, DRAFTS_VERSION, model.version)
    if value is None:
        return None
    try:
        value = {k: v for k, v in value.items() if k != "format_version"}
        drafts = Drafts(**{**value, "measured": [Measured(**m) for m in value["measured"]]})
        ok = (len(drafts.temperatures) >= 1 and list(drafts.temperatures) == sorted(drafts.temperatures)
              and all(len(m.acceptance) == len(drafts.temperatures) and all(0 <= a <= 1 for a in m.acceptance)
                      for m in drafts.measured))
        if not ok:
            raise ValueError("acceptances must be shares in [0, 1], one per temperature, temperatures ascending")
        return drafts
    except (TypeError, KeyError, ValueError) as e:
        raise corrupt(path(model), model.name, e) from None


@dataclass(frozen=True)
class Option:
    """A measured draft the planner may offer: its model and split, and the file's acceptances."""
    draft: Model
    split: Split                 # the draft whole on the device at its width
    measured: Measured
    temperatures: tuple
    positions: int               # validation positions behind the acceptance

    def acceptance(self, temperature: float) -> float:
        return self.measured.at(list(self.temperatures), temperature)


def draft_split(draft: Model, bits: int) -> Split:
    return uniform(draft.profile, draft.num_nodes, bits, quant.PER_CHANNEL if bits != 32 else quant.PER_TENSOR)


def options(model: Model, repository: ModelRepository) -> tuple[Option, ...]:
    """The drafts drafts.json measured for this target whose weights are still those measured (a draft retrained
    since is left out, with a warning naming the command that measures it again)."""
    if model.profile.sequence is None:
        return ()
    found = read(model)
    if found is None:
        return ()
    out = []
    for m in found.measured:
        try:
            draft = repository.get(m.model)
        except NotFound:
            draft = None
        if draft is None or draft.version != m.version:
            log.warning("drafts.json of %s measured %s version %s, which this repository no longer holds: it is not "
                        "offered (`qpart catalog %s --force` measures the drafts again)", model.name, m.model,
                        m.version, model.name)
            continue
        out.append(Option(draft, draft_split(draft, m.weight_bits), m, tuple(found.temperatures), found.positions))
    return tuple(out)


def tokens_per_round(a: float, k: np.ndarray) -> np.ndarray:
    """E(k) = (1 - a^(k+1)) / (1 - a): expected tokens per round for per-draft acceptance a."""
    k = np.asarray(k, float)
    return k + 1 if a >= 1 - 1e-9 else (1 - a ** (k + 1)) / (1 - a)


def workload(target: Model, option: Option, ks: np.ndarray, head_bytes: float, shape: gen.Shape,
             temperature: float, server: ServerProfile, speed=None, device: DeviceProfile = DeviceProfile(),
             observed_pass: float | None = None) -> tuple[Workload, np.ndarray]:
    """(the Workload of one generation of this shape drafting with k drafts a round, for each k in ks; the device
    memory each needs). observed_pass: seconds a round's verification pass was observed to take on this server
    (served.ServedModel.verification_pass), in place of the timed step for the rounds after the first."""
    shape = shape.check(min(target.profile.sequence[1], option.draft.profile.sequence[1]))
    ks = np.asarray(ks, float)
    a = option.acceptance(temperature)
    rounds = np.maximum(shape.new / tokens_per_round(a, ks), 1.0)
    drafted = rounds * ks                                            # positions the draft runs past the prompt
    lin_d, att_d, _, _ = gen._linear_and_attention(option.draft, option.draft.num_nodes)
    middle = shape.prompt + shape.new / 2                             # positions cached at a typical step
    device_macs = lin_d * (shape.prompt + drafted) + att_d * (shape.prompt ** 2 + drafted * middle)
    per_node = option.draft.num_nodes * device.seconds_per_node * device.mac_rate
    encode = (1 + drafted) * per_node                                 # the prefill run and one run per draft
    vocab = target.profile.sequence[0]
    sent = 4 * (ks + 1.5) + (4 * ks * vocab if temperature > 0 else 0.0)   # drafts, the last token(s), q rows
    uplink = 4 * shape.prompt + rounds * (gen.REQUEST_OVERHEAD_BYTES + sent)
    answers = rounds * gen.ANSWER_BYTES
    t_lin, t_att, _, _ = gen._linear_and_attention(target, target.num_nodes)
    verified = shape.prompt + rounds * (ks + 1)                       # positions the target runs
    server_macs = t_lin * verified + t_att * (shape.prompt ** 2 + rounds * (ks + 1) * middle)
    step = speed.tail_seconds.get(0, 0.0) if speed is not None else 0.0
    prefill = speed.prefill_seconds.get(0, 0.0) if speed is not None else 0.0
    if step > 0 and prefill > 0:
        per_position = max(prefill - step, 0.0) / (gen.PREFILL - 1)

        def passes(positions):
            return step + per_position * (positions - 1)
        server_s = passes(shape.prompt + ks) + (rounds - 1) * (observed_pass or passes(ks + 1))
    else:
        server_s = server_macs / server.mac_rate
    draft_cut = option.draft.profile.cut(option.draft.num_nodes)
    attention = [n.attention for n in option.draft.spec.nodes if n.WhichOneof("op") == "attention"]
    peak = gen._profile(option.draft, shape.prompt + shape.new).cut(option.draft.num_nodes).peak_elements
    memory = (head_bytes + 4 * draft_cut.device_parameters + 4 * peak
              + cache_bytes_per_position(attention) * (shape.prompt + shape.new))
    n = len(ks)
    work = Workload(device_macs, server_macs, np.full(n, float(head_bytes)), uplink, answers, rounds, server_s,
                    encode, np.zeros(n), np.zeros(n))
    return work, np.full(n, float(memory))


def limit(device: DeviceProfile, server_limit: int) -> int:
    """The most drafts per round to weigh: the device's, the server's and MAX_K, whichever is least."""
    return max(0, min(device.max_draft_tokens, server_limit, MAX_K))


def describe(option: Option, k: int, temperature: float) -> str:
    a = option.acceptance(temperature)
    return (f"drafting with {option.draft.name} at {option.split.weight_bits[0]} bits, k = {k} (acceptance "
            f"{a:.2f} measured on {option.positions} validation positions: {float(tokens_per_round(a, k)):.2f} "
            f"tokens a round)")

