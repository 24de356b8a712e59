"""The input as PNG, JPEG or WebP files: bytes, coding times and accuracy cost, certified like a split.

Each setting (coding, quality) is applied exactly as a device applies it: the preprocessed input is
quantized at 8 bits with the model's calibrated input range (the cut-0 quantizer), each input's codes
are written as one image file and read back (qpart.common.images), and the model runs in float32 on what
the server would decode. The top-1 drop against the float model on the unquantized input is measured on
the catalog's certification images (the second half of the validation split; never the test set), with
the exact one-sided bound of qpart.server.calibration.bounds each setting is held to set so that the chosen
setting's bound holds at the catalog's confidence, all settings together (Bonferroni); bounds are rounded
up. When the images are too few for even a setting with no flips to fit a catalog budget, a warning names
the budget and the images it would need. The planner reads the result from `codecs.json`.
"""
import logging
import math
import time

import numpy as np

from qpart.common import images, quant, tensors, torchnet
from qpart.server.calibration import bounds
from qpart.server.calibration.accuracy import Evaluator, paired_drop_bound
from qpart.server.calibration.streaming import ImageInputs, MappedInputs
from qpart.server.models import datasets
from qpart.server.models.repository import Model
from qpart.server.models.split import Split
from qpart.server.planning import catalog as catalog_mod
from qpart.server.planning import image_files

CONFIDENCE = 0.95
TIMED_INPUTS = 32      # inputs each setting's coding times are the median of
log = logging.getLogger("qpart.calibration")


def input_quantizer(model: Model) -> quant.QuantParams:
    return model.cut_quantizers(Split(0, (), (8,)))[0]


def roundtrip(x: np.ndarray, params: quant.QuantParams, coding: int, quality: int) -> tuple[np.ndarray, int, float, float]:
    """(what the server decodes [n, *shape], total message bytes, encode s, decode s) for inputs x."""
    started = time.perf_counter()
    data = tensors.encode_message(x, params, coding, quality)
    encoded = time.perf_counter()
    back = tensors.decode_message(data, coding, len(x), x.shape[1:], params)
    return back, len(data), encoded - started, time.perf_counter() - encoded


def one_at_a_time(x: np.ndarray, params: quant.QuantParams, coding: int, quality: int,
                  idle_s: float = 0.003) -> tuple[float, float]:
    """(encode s, decode s) of one input, as a device sends one: each input of x coded on its own after an idle
    pause (a batch's average hides the per-call costs a single frame pays), the median over x."""
    encode, decode = [], []
    for i in range(len(x)):
        time.sleep(idle_s)
        _, _, enc, dec = roundtrip(x[i:i + 1], params, coding, quality)
        encode.append(enc)
        decode.append(dec)
    return float(np.median(encode)), float(np.median(decode))


def supported(model: Model) -> bool:
    """Whether the model's input can travel as image files: [C, H, W] with C = 1 or 3."""
    shape = tuple(model.spec.input_shape)
    return len(shape) == 3 and shape[0] in images.MODES


def measure(model: Model, catalog: catalog_mod.Catalog, data_dir=None, settings=image_files.SETTINGS,
            confidence: float = CONFIDENCE) -> image_files.Codecs:
    """Each setting's bytes and certified drop, the certification images streamed chunk by chunk (raw images
    preprocessed, coded, decoded and run one chunk at a time: the same figures as the whole batch at once)."""
    started = time.perf_counter()
    here = images.available()
    chosen = [(name, q) for name, q in settings if images.BY_NAME[name] in here]
    pool, labels = datasets.split(model.card, "validation", data_dir)
    half = len(labels) // 2
    n = min(int(catalog.config.get("certification_samples", 5000)), len(labels) - half)
    source = ImageInputs(pool[half:half + n], model.preprocessing)
    y = labels[half:half + n]
    reference = Evaluator(model, source, y, cache_bytes=0).float_correct
    level = 1.0 - (1.0 - confidence) / max(len(chosen), 1)
    warn_small(model.name, catalog.config.get("budgets") or catalog.budgets, n, level)
    params = input_quantizer(model)
    out = []
    for name, quality in chosen:
        sizes = []

        def coded(x: np.ndarray, code=images.BY_NAME[name], quality=quality) -> np.ndarray:
            back, size, _, _ = roundtrip(x, params, code, quality)
            sizes.append(size)
            return back
        correct = Evaluator(model, MappedInputs(source, coded), y, cache_bytes=0).float_correct
        to_wrong, to_right = int((reference & ~correct).sum()), int((~reference & correct).sum())
        drop, ucb = paired_drop_bound(to_wrong, to_right, n, level)
        enc, dec = one_at_a_time(source.array(0)[:TIMED_INPUTS], params, images.BY_NAME[name], quality)
        out.append(image_files.Setting(name, quality, round(sum(sizes) / n, 1), round(drop, 3),
                                      math.ceil(ucb * 1e3) / 1e3, enc, dec))
    return image_files.Codecs(model.version, n, level, torchnet.mac_rate(), out, round(time.perf_counter() - started, 1))


def warn_small(name: str, budgets, samples: int, level: float) -> list[float]:
    """Warn when `samples` images cannot certify a setting within some budgets at `level`; those budgets."""
    _, refused = bounds.certifiable(sorted(budgets), samples, level)
    if refused:
        log.warning("%s: no image setting can be certified within these budgets: %s", name,
                    bounds.refusal(refused, samples, level))
    return [b for b, _ in refused]


def ensure(model: Model, catalog: catalog_mod.Catalog, data_dir=None) -> image_files.Codecs | None:
    """The model's codecs.json, measured and saved unless current; None when its input is not an image."""
    if not supported(model) or not images.available():
        return None
    found = image_files.load(model)
    if found is None:
        found = measure(model, catalog, data_dir)
        image_files.save(model, found)
    return found


def describe(found: image_files.Codecs) -> str:
    return ", ".join(f"{images.label(s.code, s.quality)} {s.bytes:,.0f} B drop<={s.drop_ucb:.2f}"
                     for s in found.settings)
