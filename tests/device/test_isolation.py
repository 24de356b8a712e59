"""The device package needs neither torch, nor the server's code paths, nor the server's extras."""
import subprocess
import sys

SCRIPT = r'''
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        top = name.split(".")[0]
        if top in ("torch", "safetensors", "tqdm", "grpc_reflection", "grpc_health", "prometheus_client", "PIL") \
                or name.startswith(("qpart.server", "qpart.testbed", "qpart.cli")):
            raise ImportError(f"the device must not import {name}")
sys.meta_path.insert(0, Block())
import qpart.device, qpart.device.main, qpart.device.agent, qpart.device.head, qpart.device.probe, qpart.device.daemon
from qpart.device.head import HeadExecutor
head = open(sys.argv[1], "rb").read()
import numpy as np
for backend in ("auto", "numpy", "onnxruntime"):      # auto: numpy and onnxruntime are all there is
    executor = HeadExecutor.from_bytes(head, backend=backend)
    (out,) = executor.run(np.zeros((2, 1, 28, 28), np.float32))
    print(out.shape, executor.backend.name, sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
'''


def test_device_runs_a_head_without_torch_or_server_code(repo, tmp_path):
    from qpart.server.models.heads import build_head
    from qpart.server.models.split import Split
    model = repo.get("fc6")
    path = tmp_path / "head.bin"
    path.write_bytes(build_head(model, Split(3, (4,), (4,))).SerializeToString())
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    auto, numpy, onnx = result.stdout.strip().splitlines()           # fc1's output, after its ReLU
    assert numpy == "(2, 512) numpy []" and onnx == "(2, 512) onnxruntime []"
    assert auto in (numpy, onnx)
