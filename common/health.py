"""grpc.health.v1 checks: `python -m qpart.common.health HOST:PORT` exits 0 when the server is SERVING."""
import sys
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def is_serving(target: str, timeout_s: float = 2.0, service: str = "") -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            response = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                                 timeout=timeout_s)
        except grpc.RpcError:
            return False
    return response.status == health_pb2.HealthCheckResponse.SERVING


def wait_serving(target: str, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not is_serving(target):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m qpart.common.health HOST:PORT")
    serving = is_serving(sys.argv[1])
    print("SERVING" if serving else "NOT_SERVING")
    sys.exit(0 if serving else 1)
