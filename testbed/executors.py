"""The device's head executors side by side: numpy against torch and onnxruntime, top-1 through the server's tail at
every cut, and what a head costs in time and resident memory (bench/device_executors.py reports it)."""
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

from qpart.device.head import HeadExecutor
from qpart.server.models.heads import build_head
from qpart.server.models.split import uniform


def agreement_at_cuts(model, x: np.ndarray, bits: int = 16, others=("torch",)) -> dict[str, dict[int, float]]:
    """{backend: {cut: share of inputs whose top-1 is the same with it as with the numpy executor}} for each of
    `others`, every cut the model offers; the heads' outputs go through the server's float tail where the cut
    has one."""
    head = build_head(model, uniform(model.profile, model.num_nodes, bits))   # every cut's head is a prefix of it
    reference = HeadExecutor(head, backend="numpy").backend.tensors(x)
    out = {}
    for other in others:
        runs = [reference, HeadExecutor(head, backend=other).backend.tensors(x)]
        out[other] = {}
        for cut in model.cuts():
            if not cut.runs_tail:
                top = [run[model.profile.outputs[0]].argmax(1) for run in runs]
            else:
                with torch.inference_mode():
                    both = [torch.from_numpy(np.concatenate([run[t] for run in runs])) for t in cut.tensors]
                    scores = model.tail(cut.cut)(*both)[0].numpy()
                top = [scores[:len(x)].argmax(1), scores[len(x):].argmax(1)]
            out[other][cut.cut] = float(np.mean(top[0] == top[1]))
    return out


def seconds_per_input(executor: HeadExecutor, x: np.ndarray, repeats: int = 3) -> float:
    """Best of `repeats` runs over x, per input."""
    executor.run(x[:1])
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        executor.run(x)
        best = min(best, time.perf_counter() - started)
    return best / len(x)


# Runs in a fresh interpreter that imports qpart.device and numpy only: its peak RSS before and after
# the head is loaded and run on one input.
# VmHWM, not ru_maxrss: on Linux a child's ru_maxrss starts from its parent's peak at fork, and the
# benchmark's parent holds torch and the test set
RSS_SCRIPT = r'''
import json, os, sys
import numpy as np
import qpart.device.agent
from qpart.device.head import HeadExecutor
from qpart.testbed.processes import peak_memory_kb
def peak_kib():
    return peak_memory_kb(os.getpid())
before = peak_kib()
executor = HeadExecutor.from_bytes(open(sys.argv[1], "rb").read(), backend=sys.argv[2])
executor.run(np.zeros((1, *executor.profile.input_shape), np.float32))
after = peak_kib()
print(json.dumps({"before_kib": before, "after_kib": after, "torch": "torch" in sys.modules,
                  "weight_bytes": executor.backend.weight_bytes}))
'''


def peak_rss(head, backend: str = "numpy") -> dict:
    """Peak resident memory (KiB) of a device process (no torch) before and after loading and running `head` on
    `backend` (numpy, or onnxruntime: its import counts in the second figure)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "head.bin"
        path.write_bytes(head.SerializeToString())
        result = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(path), backend], capture_output=True, text=True,
                                check=True)
    return json.loads(result.stdout)
