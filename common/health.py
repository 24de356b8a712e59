"""grpc.health.v1 checks of a qpart server or device daemon, with no package beyond grpcio.

    python -m qpart.common.health HOST:PORT [--service NAME] [--tls-ca CA.pem [--tls-cert C --tls-key K]]

Exit status: 0 SERVING, 1 NOT_SERVING (or the service is unknown), 3 unreachable (with the reason:
refused, timed out, or why TLS failed, diagnosed as the device does it: qpart.common.tls), 2 bad
arguments. The messages are encoded by hand (HealthCheckRequest: field 1, the service name;
HealthCheckResponse: field 1, the status).
"""
import argparse
import os
import pathlib
import sys
import time

if __name__ == "__main__":
    # gRPC core's own log lines (a failed TLS handshake) would reach the user beside the diagnosis; it reads
    # this once, when grpc is imported. GRPC_VERBOSITY=ERROR in the environment brings them back.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")

import grpc  # noqa: E402

from qpart.common import tls  # noqa: E402

STATUS = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
EXIT = {"SERVING": 0, "NOT_SERVING": 1, "SERVICE_UNKNOWN": 1, "UNKNOWN": 1, "UNREACHABLE": 3}


def _request(service: str) -> bytes:
    name = service.encode()
    if len(name) > 127:
        raise ValueError("service names are at most 127 bytes")
    return bytes([0x0A, len(name)]) + name if name else b""


def _status(response: bytes) -> str:
    if not response:
        return STATUS[0]
    return STATUS.get(response[1], "UNKNOWN") if response[0] == 0x08 and len(response) >= 2 else "UNKNOWN"


def check(target: str, timeout_s: float = 2.0, service: str = "",
          credentials: grpc.ChannelCredentials | None = None, options=()) -> tuple[str, str]:
    """(status, detail): SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNREACHABLE with why."""
    channel = grpc.secure_channel(target, credentials, options) if credentials else grpc.insecure_channel(target, options)
    with channel:
        call = channel.unary_unary("/grpc.health.v1.Health/Check", request_serializer=None, response_deserializer=None)
        try:
            return _status(call(_request(service), timeout=timeout_s)), ""
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN", e.details() or ""
            detail = e.details() or e.code().name
            if credentials is None and tls.speaks_tls(target, timeout_s):
                detail = tls.SPEAKS_TLS
            return "UNREACHABLE", f"{e.code().name}: {detail}"


def is_serving(target: str, timeout_s: float = 2.0, service: str = "") -> bool:
    return check(target, timeout_s, service)[0] == "SERVING"


def wait_serving(target: str, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not is_serving(target):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qpart.common.health", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="HOST:PORT, or unix:PATH for a device daemon")
    parser.add_argument("--service", default="", help="service to ask about (default: the whole server)")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the answer")
    parser.add_argument("--tls-ca", type=pathlib.Path, help="CA (PEM) the server's certificate chains to: use TLS")
    parser.add_argument("--tls-cert", type=pathlib.Path, help="client certificate (PEM), for mutual TLS")
    parser.add_argument("--tls-key", type=pathlib.Path, help="its private key (PEM)")
    parser.add_argument("--tls-server-name", help="name the server certificate must carry, if not the host's")
    args = parser.parse_args(argv)
    credentials, options = None, []
    if args.tls_ca or args.tls_cert:
        read = lambda p: p.read_bytes() if p else None  # noqa: E731
        credentials = grpc.ssl_channel_credentials(read(args.tls_ca), read(args.tls_key), read(args.tls_cert))
        if args.tls_server_name:
            options.append(("grpc.ssl_target_name_override", args.tls_server_name))
    status, detail = check(args.target, args.timeout, args.service, credentials, options)
    if status == "UNREACHABLE" and credentials is not None:
        reason = tls.diagnose(args.target, args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name,
                              args.timeout)
        detail = f"{detail.split(':', 1)[0]}: {reason}" if reason else detail
    print(status + (f": {detail}" if detail else ""))
    return EXIT[status]


if __name__ == "__main__":
    sys.exit(main())
