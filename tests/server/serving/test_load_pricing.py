"""Plans priced at the server's current load: the load factor's rules, then a server whose recent batches
took five times their idle timing pricing its part five times dearer over gRPC."""
import grpc
import pytest

from qpart.common import messages
from qpart.common.costmodel import DeviceProfile, LinkProfile
from qpart.server.serving.load import IDLE_SPREAD, ServerLoad
from qpart.v1 import service_pb2 as spb
from qpart.v1 import service_pb2_grpc


def test_the_factor_is_the_recent_median_and_idle_below_the_timing_spread():
    load = ServerLoad(window_s=10.0)
    assert load.factor() == 1.0
    for seconds in (0.010, 0.012, 0.050):         # against 4 ms per input: ratios 2.5, 3, 12.5
        load.observe(1, seconds, 0.004)
    assert load.factor() == pytest.approx(3.0)
    assert load.factor(now=1e12) == 1.0           # all of it older than the window
    calm = ServerLoad(window_s=10.0)
    calm.observe(2, 0.012, 0.004)                 # 1.5x: within what idle runs vary by
    assert IDLE_SPREAD > 1.5 and calm.factor() == 1.0
    off = ServerLoad(window_s=0)
    off.observe(1, 1.0, 0.001)
    assert off.factor() == 1.0


def test_a_loaded_server_prices_its_part_dearer(models_dir, catalogs):
    from qpart.server.serving.main import RunningServer
    from qpart.server.serving.settings import ServerSettings
    server = RunningServer(ServerSettings(models=models_dir, port=0, load_window_s=30))
    request = spb.PlanRequest(model="resnet8-96", device=messages.device_to_pb(DeviceProfile(macs_per_second=3e9)),
                              link=messages.link_to_pb(LinkProfile(rate_bps=20e6, rtt_s=0.01)), accuracy_budget=1.0,
                              inferences_per_head=100, policy=spb.SERVER_ONLY)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = service_pb2_grpc.SplitInferenceStub(channel)
            idle = stub.Plan(request, timeout=60)
            for _ in range(5):
                server.core.load.observe(4, 5 * 4 * 0.002, 0.002)       # batches at five times their idle timing
            busy = stub.Plan(request, timeout=60)
    finally:
        server.stop(0, notice=0)
    assert idle.server_load == 1.0 and busy.server_load == pytest.approx(5.0)
    assert idle.predicted.server_time_s > 0
    assert busy.predicted.server_time_s == pytest.approx(5 * idle.predicted.server_time_s, rel=1e-6)
    assert busy.predicted.uplink_time_s == pytest.approx(idle.predicted.uplink_time_s)
