"""What this server's part costs on this machine, timed at start-up: the tail from every cut and the
activation codec (quantize + pack on the device side, check + unpack + dequantize on the server's).
The planner prices the server's part with these figures."""
import logging
import statistics
import time

import numpy as np
import torch

from qpart.common import quant, tensors, torchnet
from qpart.server.planning.planner import CodecCosts, Planner

log = logging.getLogger("qpart.server.speed")


def _seconds_after_idle(idle_s: float, fn, *args) -> float:
    """Seconds fn(*args) takes after the machine sat idle for idle_s (as work that follows a network wait)."""
    time.sleep(idle_s)
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def tail_seconds(model, cuts, idle_s: float = 0.01, repeats: int = 7) -> dict[int, float]:
    """{cut: seconds the server's part takes for one input from it} for the given cuts (0 where nothing
    crosses: the device runs everything).

    Each run follows an idle pause, as a device's next input does (a network round trip after the
    last): after 10 ms idle this 2-core VM ran a tail 2-4 times slower than back to back, and even
    the last small layer took ~0.3 ms instead of 0.01. That is what a lightly loaded server sees.
    The figure is the lower quartile of the runs: now and then a run stalls ~10 ms (a third of
    lenet's first conv here, waiting on a descheduled vCPU), and a median can land on the stalls.
    """
    runs = [c for c in cuts if model.profile.cut(c).runs_tail]
    tails = [(model.tail(c), [torch.zeros(1, *s) for s in model.profile.cut(c).shapes]) for c in runs]
    samples = [[] for _ in tails]
    with torch.inference_mode():
        for tail, x in tails:
            tail(*x)                     # first run: allocations that happen once
        for _ in range(repeats):         # rounds over all cuts: drift of the machine hits every cut alike
            for i, (tail, x) in enumerate(tails):
                samples[i].append(_seconds_after_idle(idle_s, tail, *x))
    return {c: 0.0 for c in cuts} | {c: sorted(s)[len(s) // 4] for c, s in zip(runs, samples)}


CODEC_WIDTHS = tuple(range(1, 17)) + (32,)


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


def measure(planner: Planner, models) -> None:
    """Time each model's tail from every catalog cut, the activation codecs and this machine's MAC rate, and
    price plans with them: what qpart-server does at start-up, and `qpart plan --measure-server` offline."""
    for model in models:
        catalog = planner.catalog(model)
        model.tail_seconds = tail_seconds(model, catalog.cuts if catalog else [])
        times = model.tail_seconds
        log.info("%s: tail timed from %d cuts, %.3f to %.3f ms per input", model.name, len(times),
                 min(times.values(), default=0) * 1e3, max(times.values(), default=0) * 1e3,
                 extra={"fields": {"event": "tail_timed", "model": model.name,
                                   "tail_ms": {str(c): round(t * 1e3, 4) for c, t in times.items()}}})
    planner.codec = CodecCosts(activation_codec_costs(), torchnet.mac_rate(), zlib_costs())
    log.info("MAC rate %.2f GMAC/s; activation codec timed at %s bits", planner.codec.mac_rate / 1e9,
             ",".join(map(str, sorted(planner.codec.per_width))),
             extra={"fields": {"event": "speed_measured", "macs_per_second": planner.codec.mac_rate}})
    planner.forget()
