"""What one generation costs under each catalog split of a language model: the planner's workload per request.

A generation is a prompt of P tokens and N new tokens. Under a split at cut c (0 < c, the server runs a tail):
    prefill   the device runs its head over the P prompt positions, sends them in one message; the server runs
              the tail over them and answers the first token: one round trip
    per token the device runs its head over the token it got (one position after those cached), sends one
              position's hidden states; the server runs one step of its tail and answers the next token: N - 1
              more round trips, each paid in full (the device needs the token before its next step)
Server-only (cut 0): the device sends the prompt's ids (4 bytes a token) and the server generates and streams
the N tokens: one round trip, the server's P-position prefill and N - 1 steps; the tokens stream down while it
computes, so their downlink adds only what outlasts its steps. Device-only: no link at all.
The device's cost per node beside its MACs (DeviceProfile.seconds_per_node, measured by the device) is paid at
every run of its head: a small model's step is mostly that.
MACs: linear ops cost the same per position; attention's products grow with the positions cached (a run of T
after `past` computes T x (past + T)). Server time is what this server timed for the tail from each cut: one
step (one position after WARM cached) and a prefill of PREFILL positions, interpolated linearly for P
(qpart.server.serving.speed); without timings, its MACs at the server's rate. The device's cache of keys and
values (float32, its attention nodes, P + N positions) counts against its memory, beside the head.
"""
import math
from dataclasses import dataclass

import numpy as np

from qpart.common import network, packing
from qpart.common.costmodel import DeviceProfile, ServerProfile, Workload
from qpart.common.errors import InvalidArgument
from qpart.common.kvcache import cache_bytes_per_position
from qpart.server.models.repository import Model

PROMPT_TOKENS = 32          # a generation's prompt when the request does not say
NEW_TOKENS = 64             # its new tokens when the request does not say
WARM = 32                   # positions cached when one step is timed
PREFILL = 32                # positions of the timed prefill
REQUEST_OVERHEAD_BYTES = 48  # a Generate request beside its tensor data: session id, position, tensor name and shape
MAX_TEMPERATURE = 100.0    # the highest sampling temperature a generation shape may give
ANSWER_BYTES = 48            # a GenerateResponse: session id, position, token, timings


@dataclass(frozen=True)
class Shape:
    prompt: int = PROMPT_TOKENS     # tokens the device sends first
    new: int = NEW_TOKENS           # tokens generated
    temperature: float = 0.0        # sampling temperature (0: greedy); prices drafting's acceptance

    def check(self, context: int) -> "Shape":
        if self.prompt < 1 or self.new < 1 or self.prompt + self.new > context:
            raise InvalidArgument(f"a generation of {self.prompt} prompt and {self.new} new tokens must have at least "
                                  f"one of each and fit the model's context of {context} positions")
        if not (math.isfinite(self.temperature) and 0 <= self.temperature <= MAX_TEMPERATURE):
            raise InvalidArgument(f"a generation's temperature must be 0 to {MAX_TEMPERATURE:g}, got {self.temperature}")
        return self

    @property
    def positions(self) -> int:
        """Positions the head and the tail run over: the prompt and every new token but the last."""
        return self.prompt + self.new - 1


def _profile(model: Model, length: int) -> network.NetworkProfile:
    """The model analysed for a run of `length` positions, kept with the model (a few lengths per request)."""
    key = ("run of positions", length)
    found = model._derived.get(key)
    if found is None:
        found = model._derived.setdefault(key, network.analyze(model.spec, length=length))
    return found


def _linear_and_attention(model: Model, cut: int) -> tuple[float, float, float, float]:
    """(device linear MACs per position, device attention MACs per position pair, the server's two) of a cut."""
    one, two = _profile(model, 1), _profile(model, 2)
    total1, total2 = (sum(n.macs for n in p.nodes) for p in (one, two))
    d1, d2 = one.cut(cut).device_macs, two.cut(cut).device_macs
    s1, s2 = total1 - d1, total2 - d2
    att_d, att_s = (d2 - 2 * d1) / 2, (s2 - 2 * s1) / 2          # a run of 2: 2 lin + 4 att; of 1: lin + att
    return d1 - att_d, att_d, s1 - att_s, att_s


def _pairs(shape: Shape) -> float:
    """Query-key pairs attention computes in one generation: the prefill's P x P, then p + 1 at each step."""
    steps = shape.new - 1
    return shape.prompt ** 2 + steps * (shape.prompt + 1) + steps * (steps - 1) / 2


def _device_cache_bytes(model: Model, cut: int) -> int:
    return cache_bytes_per_position([n.attention for n in model.spec.nodes[:cut] if n.WhichOneof("op") == "attention"])


def workload(model: Model, splits: list, head_bytes: np.ndarray, shape: Shape, server: ServerProfile,
             speed=None, codec=None, device: DeviceProfile = DeviceProfile(),
             streamed_step: float | None = None) -> tuple[Workload, np.ndarray]:
    """(the Workload of one generation of this shape under each split, the device memory each needs). The
    device's cost per node (DeviceProfile.seconds_per_node) is paid for every node of the head at each of its
    runs (the prefill and each step), in MAC-equivalents at its rate. streamed_step: seconds per token the server
    was observed to stream at (cut 0), in place of its timed step."""
    shape = shape.check(model.profile.sequence[1])
    pairs, positions = _pairs(shape), shape.positions
    runs_at = _profile(model, shape.prompt + shape.new)
    device_macs, server_macs, server_s, uplink, runs, encode, decode, memory = (np.zeros(len(splits)) for _ in range(8))
    streamed_by_server = np.array([s.cut == 0 for s in splits], bool)
    for i, split in enumerate(splits):
        cut = model.profile.cut(split.cut)
        lin_d, att_d, lin_s, att_s = _linear_and_attention(model, split.cut)
        device_macs[i], server_macs[i] = lin_d * positions + att_d * pairs, lin_s * positions + att_s * pairs
        width = [math.prod(s[1:]) for s in cut.shapes]                       # elements of one position
        if not cut.runs_tail:
            runs[i] = 0
        elif split.cut == 0:                                                  # the prompt's ids, then streamed
            runs[i], uplink[i] = 1, 4 * shape.prompt + REQUEST_OVERHEAD_BYTES
        else:
            runs[i] = shape.new
            per_position = sum(packing.packed_size(w, b) for w, b in zip(width, split.activation_bits))
            uplink[i] = per_position * positions + REQUEST_OVERHEAD_BYTES * shape.new
            if codec is not None:                     # packing each run's positions; unpacking them on the server
                for w, b in zip(width, split.activation_bits):
                    first, rest = codec.tensor(b, w * shape.prompt), codec.tensor(b, w)
                    encode[i] += first[0] + rest[0] * (shape.new - 1)
                    decode[i] += first[1] + rest[1] * (shape.new - 1)
        head_runs = 0 if split.cut == 0 else shape.new          # the prefill and each token fed to it
        encode[i] += head_runs * split.cut * device.seconds_per_node * device.mac_rate
        if cut.runs_tail:
            step = speed.tail_seconds.get(split.cut, 0.0) if speed is not None else 0.0
            prefill = speed.prefill_seconds.get(split.cut, 0.0) if speed is not None else 0.0
            if step > 0 and prefill > 0:
                per_position = max(prefill - step, 0.0) / (PREFILL - 1)
                streaming = streamed_step if split.cut == 0 and streamed_step else step
                server_s[i] = step + per_position * (shape.prompt - 1) + streaming * (shape.new - 1)
            else:
                server_s[i] = server_macs[i] / server.mac_rate
        memory[i] = (head_bytes[i] + 4 * cut.device_parameters + 4 * runs_at.cut(split.cut).peak_elements
                     + _device_cache_bytes(model, split.cut) * (shape.prompt + shape.new))
    # a split's answers each end a round trip; sending the prompt, the server streams its tokens as it computes
    answers = np.where(runs > 0, np.where(streamed_by_server, ANSWER_BYTES, ANSWER_BYTES * shape.new), 0.0)
    streamed = np.where(np.logical_and(runs > 0, streamed_by_server), ANSWER_BYTES * (shape.new - 1), 0.0)
    work = Workload(device_macs, server_macs, np.asarray(head_bytes, float), uplink, answers, runs, server_s,
                    encode, decode, streamed)
    return work, memory
