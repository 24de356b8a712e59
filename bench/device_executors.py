"""The device's head executors on this machine: numpy, torch and onnxruntime, per zoo model.

    python bench/device_executors.py [--models model-repo] [--images 1000] [--bits 8] [--markdown FILE]

For each model, its whole network as a head (what a device-only plan ships) with `--bits` weights:
time per input with each backend (batch of 1, and per input in a batch of 16; best of 3), the
head's compact weight bytes against float32, and the peak resident memory of a fresh device process
(no torch imported) before and after it loads and runs the head, on numpy and on onnxruntime. Then the
torch and onnxruntime executors' top-1 against numpy's through the server's tail at every cut (16-bit
weights) on `--images` test images.
"""
import argparse
import pathlib

import numpy as np

from qpart.common import data
from qpart.device.head import HeadExecutor
from qpart.server.models import datasets
from qpart.server.models.heads import build_head
from qpart.server.models.repository import ModelRepository
from qpart.server.models.split import uniform
from qpart.testbed import executors

MODELS = ("fc6", "lenet", "vgg8", "resnet8", "mobilenetv2", "resnet8-96", "mobilenetv2-96")


BACKENDS = ("numpy", "torch", "onnxruntime")


def measure(model, x: np.ndarray, bits: int) -> dict:
    head = build_head(model, uniform(model.profile, model.num_nodes, bits))
    row = {"model": model.name, "macs": sum(n.macs for n in model.profile.nodes)}
    for backend in BACKENDS:
        executor = HeadExecutor(head, backend=backend)
        row[f"{backend}_1_ms"] = executors.seconds_per_input(executor, x[:1]) * 1e3
        row[f"{backend}_16_ms"] = executors.seconds_per_input(executor, x[:16]) * 1e3
    row["float32_bytes"] = sum(n.weight_count for n in model.profile.nodes) * 4
    for backend in ("numpy", "onnxruntime"):
        rss = executors.peak_rss(head, backend)
        assert not rss["torch"], "the device process imported torch"
        row.update({f"{backend}_bytes": rss["weight_bytes"], "rss_before_kib": rss["before_kib"],
                    f"{backend}_rss_kib": rss["after_kib"]})
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", type=pathlib.Path, default=pathlib.Path("model-repo"))
    parser.add_argument("--names", nargs="*", default=list(MODELS))
    parser.add_argument("--images", type=int, default=1000, help="test images for the agreement check")
    parser.add_argument("--bits", type=int, default=8, help="weight bits of the timed heads")
    parser.add_argument("--markdown", type=pathlib.Path, help="also write the tables here")
    args = parser.parse_args(argv)
    repo = ModelRepository(args.models)
    timing = ["| model | MMAC/input | " + " | ".join(f"{b} ms (batch 1)" for b in BACKENDS) + " | "
              + " | ".join(f"{b} ms/input (16)" for b in BACKENDS) + " | weights float32 KiB | numpy holds KiB | "
              "device RSS before MiB | with head, numpy MiB | with head, onnxruntime MiB |", "|" + "---|" * 13]
    parity = ["| model | executor | cuts | images | lowest agreement with numpy (cut) | cuts below 99.9 % |",
              "|---|---|---|---|---|---|"]
    for name in args.names:
        model = repo.get(name)
        x, _ = datasets.model_split(model, "test", data.data_dir(), limit=args.images)
        r = measure(model, x, args.bits)
        timing.append(f"| {name} | {r['macs'] / 1e6:.2f} | "
                      + " | ".join(f"{r[f'{b}_1_ms']:.2f}" for b in BACKENDS) + " | "
                      + " | ".join(f"{r[f'{b}_16_ms']:.2f}" for b in BACKENDS)
                      + f" | {r['float32_bytes'] / 1024:.0f} | {r['numpy_bytes'] / 1024:.0f} | "
                      f"{r['rss_before_kib'] / 1024:.1f} | {r['numpy_rss_kib'] / 1024:.1f} | "
                      f"{r['onnxruntime_rss_kib'] / 1024:.1f} |")
        print(timing[-1], flush=True)
        for backend, agreement in executors.agreement_at_cuts(model, x, others=BACKENDS[1:]).items():
            low_cut = min(agreement, key=agreement.get)
            below = sum(a < 0.999 for a in agreement.values())
            parity.append(f"| {name} | {backend} | {len(agreement)} | {len(x)} | {agreement[low_cut] * 100:.2f} % "
                          f"({low_cut}) | {below} |")
            print(parity[-1], flush=True)
    text = "\n".join(timing) + "\n\n" + "\n".join(parity) + "\n"
    print(text)
    if args.markdown:
        args.markdown.write_text(text)


if __name__ == "__main__":
    main()
