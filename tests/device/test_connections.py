"""ServerClient(own_connection=True): a TCP connection of its own, as each emulated device in a fleet benchmark
needs for a link of its own (gRPC otherwise shares one connection between a process's channels)."""
import pathlib

import pytest

from qpart.device.client import ServerClient
from qpart.server.serving.main import RunningServer
from qpart.server.serving.settings import ServerSettings


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    running = RunningServer(ServerSettings(models=tmp_path_factory.mktemp("no-models"), port=0,
                                            measure_speed=False))
    yield running
    running.stop(0, notice=0)


def established_to(port: int) -> int:
    """This machine's established TCP connections whose remote end is 127.0.0.1:port (the client sides)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):       # gRPC's sockets are IPv6 ones, v4-mapped
        for line in pathlib.Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            remote, state = fields[2], fields[3]
            if state == "01" and remote.endswith(f"0100007F:{port:04X}"):
                count += 1
    return count


def test_own_connection_opens_one_connection_per_client(server):
    before = established_to(server.port)
    own = [ServerClient(f"127.0.0.1:{server.port}", timeout_s=30, own_connection=True) for _ in range(3)]
    for c in own:
        c.list_models()
    assert established_to(server.port) - before == 3
    shared = [ServerClient(f"127.0.0.1:{server.port}", timeout_s=30) for _ in range(3)]
    for c in shared:
        c.list_models()
    assert established_to(server.port) - before <= 4          # the shared ones: one connection between them at most
    for c in own + shared:
        c.close()
