"""qpart-server --processes: several server processes on one port, each serving any plan; stopping the
parent stops them all."""
import pathlib
import signal
import time

import grpc

from qpart.testbed.processes import ServerProcess
from qpart.v1 import service_pb2 as spb
from qpart.v1 import service_pb2_grpc


def _children(pid: int) -> list[int]:
    out = []
    for entry in pathlib.Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            pass
    return out


def test_two_processes_share_the_port_and_serve_every_plan(models_dir, catalogs):
    with ServerProcess(models_dir, 0, "--processes", "2", "--no-measure-speed", "--cold-heads") as server:
        children = _children(server.pid)
        assert len(children) == 2
        plan = None
        for _ in range(12):         # new connections: the kernel spreads them over both processes
            channel = grpc.insecure_channel(server.target, options=[("grpc.use_local_subchannel_pool", 1)])
            stub = service_pb2_grpc.SplitInferenceStub(channel)
            plan = plan or stub.Plan(spb.PlanRequest(model="lenet", policy=spb.SERVER_ONLY, accuracy_budget=100),
                                     timeout=30)
            batch = spb.ActivationBatch(request_ids=[7], tensors=[spb.TensorBatch(
                name=plan.activations[0].name, sample_shape=plan.activations[0].sample_shape,
                bits=plan.activations[0].bits, data=bytes(-(-28 * 28 * plan.activations[0].bits // 8)))])
            (answer,) = stub.Infer(iter([spb.InferRequest(plan_id=plan.plan_id, batch=batch)]), timeout=30)
            assert [r.request_id for r in answer.results] == [7]                 # a plan id from either serves
            channel.close()
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
    deadline = time.monotonic() + 10
    while any(pathlib.Path(f"/proc/{c}").exists() for c in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(pathlib.Path(f"/proc/{c}/stat").exists() and " Z " not in pathlib.Path(f"/proc/{c}/stat").read_text()
                   for c in children)
