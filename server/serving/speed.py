"""What this server's part costs on this machine: the tail from every catalog cut, the activation codec
(quantize + pack on the device side, check + unpack + dequantize on the server's), zlib and the MAC rate.

`measure` returns a SpeedProfile (qpart.server.serving.speed_profile); it writes nothing. Every figure
is robust (qpart.common.timing): taken after waiting for the machine to be idle (or marked as taken
under load, so that the server times it again once idle), the median of runs taken in rounds over all
cuts (drift hits every cut alike), outliers refused, its spread kept; a figure whose spread is wide is
timed again, and one that breaks a sanity rule is refused with a warning that names it:
- the MAC rate must lie in SANE_MAC_RATE (else the profile's static rate prices the tail's MACs);
- the tail from a later cut runs a subset of the nodes the tail from an earlier cut runs, so it may not
  take more than SUBSET_SLACK times as long (plus SUBSET_SLACK_S): such a figure is timed again and,
  if it still does, capped at the earlier cut's.
"""
import logging
import statistics
import time

import numpy as np
import torch

from qpart.common import quant, tensors, timing, torchnet
from qpart.common.timing import CpuLoad, Timing
from qpart.common.kvcache import KVCache
from qpart.server.planning.generation import PREFILL, WARM
from qpart.server.planning.patterns import CodecCosts, ModelSpeed
from qpart.server.serving import speed_profile
from qpart.server.serving.speed_profile import ModelTails, SpeedProfile

log = logging.getLogger("qpart.server.speed")
SANE_MAC_RATE = (1e7, 1e14)   # MACs per second a server's float32 linear layer can plausibly run at
SUBSET_SLACK = 2.0            # a later cut's tail may take this many times an earlier cut's ...
SUBSET_SLACK_S = 2e-4         # ... plus this many seconds, before it is refused as an outlier
RETRIES = 2                   # extra timings of a figure that is too spread or breaks a rule
STREAK = 8                    # steps timed back to back where the server feeds its tokens itself (cut 0)
CODEC_WIDTHS = tuple(range(1, 17)) + (32,)


def _seconds_after_idle(idle_s: float, fn, *args, clock=time.perf_counter) -> float:
    """Seconds fn(*args) takes after the machine sat idle for idle_s (as work that follows a network wait)."""
    time.sleep(idle_s)
    started = clock()
    fn(*args)
    return clock() - started


def _runner(model, cut: int, positions: int | None):
    """What one timed run does: the tail from `cut` on one input; a language model's (positions not None) on a run
    of that many positions after generation.WARM cached (1: one generated token's step), with a cache of its own."""
    tail, shapes = model.tail(cut), model.profile.cut(cut).shapes
    if positions is None:
        x = [torch.zeros(1, *s) for s in shapes]
        return lambda: tail(*x)
    warm = [torch.zeros(1, WARM, *s[1:]) for s in shapes]
    x = [torch.zeros(1, positions, *s[1:]) for s in shapes]
    cache = {}

    def run():
        if "kv" not in cache or cache["kv"].position + positions > cache["kv"].max_positions:
            cache["kv"] = KVCache(model.profile.sequence[1])
            tail(*warm, cache=cache["kv"])
        kv = cache["kv"]
        kv.layers = {k: (key[:, :, :WARM], value[:, :, :WARM]) for k, (key, value) in kv.layers.items()}
        kv.position = WARM                 # every run starts from the same WARM positions
        tail(*x, cache=kv)
    return run


def _tail_rounds(model, cuts, idle_s: float, rounds: int, clock, positions: int | None = None) -> dict[int, Timing]:
    runs = [(c, _runner(model, c, positions)) for c in cuts]
    samples = {c: [] for c in cuts}
    with torch.inference_mode():
        for _, run in runs:
            run()                        # first run: allocations that happen once
        for _ in range(rounds):          # rounds over all cuts: drift of the machine hits every cut alike
            for c, run in runs:
                if positions == 1 and c == 0:   # sending the prompt, the server feeds each token back itself:
                    streak = _seconds_after_idle(0.0, lambda: [run() for _ in range(STREAK)], clock=clock)
                    samples[c].append(streak / STREAK)      # its steps follow one another, warm, with no idle
                else:
                    samples[c].append(_seconds_after_idle(idle_s, run, clock=clock))
    return {c: Timing.of(s) for c, s in samples.items()}


def _subset_outliers(figures: dict[int, Timing], streamed: bool = False) -> dict[int, int]:
    """{later cut: earlier cut} where the later cut's tail (a subset of the earlier's nodes) took too long; a
    streamed cut 0 (timed back to back) is no yardstick for tails that follow an idle pause."""
    out, cuts = {}, sorted(figures)
    for i, later in enumerate(cuts):
        for earlier in cuts[:i]:
            if streamed and earlier == 0:
                continue
            if figures[later].median > SUBSET_SLACK * figures[earlier].median + SUBSET_SLACK_S:
                out[later] = earlier
                break
    return out


def tail_timings(model, cuts, idle_s: float = 0.01, rounds: int = 9, clock=time.perf_counter,
                 positions: int | None = None) -> tuple[dict[int, Timing], list[str]]:
    """({cut: Timing of the server's part for one input from it}, warnings) for the cuts whose tail runs; a
    language model's for a run of `positions` after WARM cached (1: a generated token's step; PREFILL: a prompt).

    Each run follows an idle pause, as a device's next input does (a network round trip after the
    last): after 10 ms idle this 2-core VM ran a tail 2-4 times slower than back to back. That is what
    a lightly loaded server sees.
    """
    if model.profile.sequence is not None and positions is None:
        positions = 1
    runs = [c for c in cuts if model.profile.cut(c).runs_tail]
    figures = _tail_rounds(model, runs, idle_s, rounds, clock, positions) if runs else {}
    warnings = []
    for _ in range(RETRIES):
        again = ({c for c, t in figures.items() if t.spread > timing.MAX_SPREAD}
                 | set(_subset_outliers(figures, positions == 1)))
        if not again:
            break
        for c, t in _tail_rounds(model, sorted(again), idle_s, rounds, clock, positions).items():
            if t.spread <= figures[c].spread or c in _subset_outliers(figures, positions == 1):
                figures[c] = t
    for later, earlier in _subset_outliers(figures, positions == 1).items():
        warnings.append(f"{model.name}: the tail from cut {later} timed at {figures[later].describe()}, more than "
                        f"{SUBSET_SLACK:g}x the tail from cut {earlier} ({figures[earlier].describe()}) which runs "
                        f"all its nodes and more; refused, priced as cut {earlier}'s")
        figures[later] = figures[earlier]
    for c, t in figures.items():
        if t.spread > timing.MAX_SPREAD:
            warnings.append(f"{model.name}: the tail from cut {c} varies widely: {t.describe()}")
    return figures, warnings


def raw_image_shape(model) -> tuple[int, ...]:
    """The shape of one raw uint8 image the device preprocesses: the card's `image_shape` (recorded at import
    from the model's data), else the model input's own size (older cards; a resize is then priced as none)."""
    shape = model.card.get("image_shape")
    if isinstance(shape, list) and len(shape) in (2, 3) and all(isinstance(d, int) and 0 < d <= 4096 for d in shape):
        return tuple(shape)
    channels, height, width = (tuple(model.spec.input_shape) + (1, 1, 1))[:3]
    return (height, width) if channels == 1 else (height, width, 3)


def preprocess_timing(model, idle_s: float = 0.003, rounds: int = 9, clock=time.perf_counter) -> Timing:
    """Timing of the model's preprocessing (qpart.common.preprocess) of one raw image, after an idle pause as a
    device's next input: the device's work before its head, priced like encoding."""
    if len(model.spec.input_shape) != 3 or model.spec.input_shape[0] not in (1, 3):
        return Timing.of([0.0])          # not an image model: its inputs come as tensors, nothing to preprocess
    raw = np.random.default_rng(0).integers(0, 256, (1, *raw_image_shape(model)), dtype=np.uint8)
    model.preprocessing.apply(raw)
    return Timing.of(_seconds_after_idle(idle_s, model.preprocessing.apply, raw, clock=clock) for _ in range(rounds))


def mac_rate(clock=time.perf_counter) -> tuple[Timing, list[str]]:
    """(Timing of this machine's float32 MAC rate in MACs per second, warnings); out of SANE_MAC_RATE: refused
    (a zero Timing) with a warning that names it."""
    rate = torchnet.mac_rate_timing(clock=clock)
    for _ in range(RETRIES):
        if not timing.in_range("MAC rate", rate.median, *SANE_MAC_RATE) and rate.spread <= timing.MAX_SPREAD:
            break
        rate = min(rate, torchnet.mac_rate_timing(clock=clock), key=lambda t: t.spread)
    refused = timing.in_range("the server's MAC rate", rate.median, *SANE_MAC_RATE, unit=" MAC/s")
    if refused:
        return Timing(0.0, 0.0, 0.0, rate.samples, rate.refused), [refused]
    return rate, []


def _check_and_decode(data: bytes, n: int, bits: int, params) -> None:
    tensors.check_batch(1, (n,), bits, len(data))
    tensors.decode_batch(data, 1, (n,), params)


def activation_codec_costs(sizes=(256, 16384), repeats: int = 11, idle_s: float = 0.003) -> dict[int, tuple[float, float, float, float]]:
    """bits -> (encode fixed, encode per element, decode fixed, decode per element) seconds on this machine.

    Encoding is quantize + pack (the device's work), decoding check + unpack + dequantize (the
    server's). Each call is timed after an idle pause, as an inference follows a wait on the
    network: small tensors then cost several times what a hot loop says, and the widths that take
    more numpy calls more so.
    """
    rng = np.random.default_rng(0)
    cases = []   # (bits, n, batch, params, packed)
    for bits in CODEC_WIDTHS:
        for n in sizes:
            x = rng.uniform(0, 4, (1, n)).astype(np.float32)
            params = None if bits == quant.FLOAT_BITS else quant.params_for_range(0, 4, bits)
            cases.append((bits, n, x, params, tensors.encode_batch(x, params)))
    encode = {(bits, n): [] for bits, n, *_ in cases}
    decode = {(bits, n): [] for bits, n, *_ in cases}
    for _ in range(repeats):   # rounds over all widths: drift of the machine hits every width alike
        for bits, n, x, params, data in cases:
            encode[bits, n].append(_seconds_after_idle(idle_s, tensors.encode_batch, x, params))
            decode[bits, n].append(_seconds_after_idle(idle_s, _check_and_decode, data, n, bits, params))
    out = {}
    span = sizes[1] - sizes[0]
    for bits in CODEC_WIDTHS:
        (e1, e2), (d1, d2) = ([statistics.median(t[bits, n]) for n in sizes] for t in (encode, decode))
        b_enc, b_dec = max((e2 - e1) / span, 0.0), max((d2 - d1) / span, 0.0)
        out[bits] = (max(e1 - b_enc * sizes[0], 0.0), b_enc, max(d1 - b_dec * sizes[0], 0.0), b_dec)
    return out


def zlib_costs(raw_bytes: int = 16384, repeats: int = 11) -> tuple[float, float]:
    """(seconds per packed byte to zlib-code, to check and inflate) at the device's level, on codes that are
    mostly zeros with a few values, as after a ReLU (the per-call cost is folded in at this size)."""
    rng = np.random.default_rng(0)
    packed = np.where(rng.random(raw_bytes) < 0.7, 0, rng.integers(0, 256, raw_bytes)).astype(np.uint8).tobytes()
    coded = tensors.code(packed, tensors.ZLIB)
    encode = statistics.median(_seconds_after_idle(0.003, tensors.code, packed, tensors.ZLIB) for _ in range(repeats))
    decode = statistics.median(_seconds_after_idle(0.003, tensors.uncode, coded, tensors.ZLIB, raw_bytes)
                               for _ in range(repeats))
    return encode / raw_bytes, decode / raw_bytes


def measure(models, cuts_of, base: SpeedProfile | None = None, idle_wait_s: float = 10.0,
            load: CpuLoad | None = None, clock=time.perf_counter) -> SpeedProfile:
    """Time what `base` lacks (everything without one): the MAC rate and codecs, and each model's tail from
    its cuts (cuts_of(model) -> cut numbers) unless base holds that model's version. Waits up to idle_wait_s
    for the machine to be idle first; the profile says how busy it was (provisional when busy)."""
    missing = [m for m in models if base is None or base.tails_for(m) is None]
    if base is not None and not missing:
        return base
    load = load or CpuLoad()
    busy = load.wait_for_idle(idle_wait_s)
    if busy is not None and busy > timing.BUSY_THRESHOLD:
        log.warning("other processes use %.0f%% of the CPU after waiting %.0f s: the speed figures taken now are "
                    "provisional and are timed again once the machine is idle", 100 * busy, idle_wait_s)
    warnings: list[str] = []
    if base is None:
        rate, warned = mac_rate(clock)
        warnings += warned
        profile = SpeedProfile(rate, activation_codec_costs(), zlib_costs(), {}, busy, time.time(), timing.machine())
    else:
        profile = base.copy()
        profile.busy = busy if profile.busy is None else max(profile.busy, busy or 0.0)
    for model in missing:
        figures, warned = tail_timings(model, cuts_of(model), clock=clock)
        prefill = {}
        if model.profile.sequence is not None:           # a language model: its prompt's run too
            prefill, more = tail_timings(model, cuts_of(model), clock=clock, positions=PREFILL)
            warned += more
        warnings += warned
        profile.tails[model.name] = ModelTails(model.version, figures, preprocess_timing(model, clock=clock), prefill)
    for line in warnings:
        log.warning("speed: %s", line, extra={"fields": {"event": "speed_refused", "warning": line}})
    profile.warnings = base.warnings + warnings if base else warnings
    return profile


def priced_with(profile: SpeedProfile, models, cuts_of, fallback_mac_rate: float
                ) -> tuple[CodecCosts, dict[tuple[str, str], ModelSpeed]]:
    """(codec costs, {(name, version): ModelSpeed}) to price plans with: each model's tails and preprocessing, the
    codecs, the MAC rate or, where it was refused, fallback_mac_rate; each figure logged with its spread."""
    speeds = {}
    for model in models:
        timed = profile.timed(model)
        if timed is None:
            continue
        tails = timed.cuts
        speeds[model.name, model.version] = ModelSpeed({c: 0.0 for c in cuts_of(model)} |
                                                       {c: t.median for c, t in tails.items()}, timed.preprocess.median,
                                                       {c: t.median for c, t in timed.prefill.items()})
        if tails:
            spreads = [t.spread for t in tails.values()]
            log.info("%s: tails from %d cuts, %.3f to %.3f ms per input (spread %.0f-%.0f%%; %s)", model.name,
                     len(tails), 1e3 * min(t.median for t in tails.values()), 1e3 * max(t.median for t in tails.values()),
                     100 * min(spreads), 100 * max(spreads), profile.source, extra={"fields": {
                         "event": "tail_timed", "model": model.name, "source": profile.source,
                         "tail_ms": {str(c): round(t.median * 1e3, 4) for c, t in tails.items()},
                         "tail_spread": {str(c): round(t.spread, 3) for c, t in tails.items()}}})
    rate = profile.mac_rate.median or fallback_mac_rate
    log.info("speed: %s", speed_profile.describe(profile),
             extra={"fields": {"event": "speed_measured", "macs_per_second": rate, "source": profile.source,
                               "mac_spread": round(profile.mac_rate.spread, 3), "busy": profile.busy,
                               "provisional": profile.provisional}})
    return CodecCosts(profile.codec, rate, profile.zlib), speeds
