"""The gRPC floor: a bare Python gRPC server that answers every message of a bidirectional stream with a fixed
reply of a given size and does nothing else (no parsing, no metrics), with the thread pool (grpc.server, as
qpart-server runs) or with grpc.aio (one event loop).

    python -m qpart.testbed.echo --reply-bytes 60 [--aio] [--workers 320] [--port 0]

Prints "echo listening on 127.0.0.1:PORT" once it listens; runs until SIGTERM. The method is
/qpart.bench.Echo/Stream; requests and replies are opaque bytes.
"""
import argparse
import asyncio
import signal
import sys
import threading
from concurrent import futures

import grpc

SERVICE, METHOD = "qpart.bench.Echo", "Stream"
PATH = f"/{SERVICE}/{METHOD}"
OPTIONS = [("grpc.max_receive_message_length", 16 << 20), ("grpc.max_send_message_length", 16 << 20)]


def _identity(b: bytes) -> bytes:
    return b


def serve_threads(port: int, reply: bytes, workers: int) -> None:
    def stream(requests, context):
        for _ in requests:
            yield reply
    handler = grpc.method_handlers_generic_handler(SERVICE, {METHOD: grpc.stream_stream_rpc_method_handler(
        stream, request_deserializer=_identity, response_serializer=_identity)})
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=OPTIONS,
                         maximum_concurrent_rpcs=workers)
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"echo listening on 127.0.0.1:{bound}", flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    stopped.wait()
    server.stop(0)


async def serve_aio(port: int, reply: bytes) -> None:
    async def stream(requests, context):
        async for _ in requests:
            yield reply
    handler = grpc.method_handlers_generic_handler(SERVICE, {METHOD: grpc.stream_stream_rpc_method_handler(
        stream, request_deserializer=_identity, response_serializer=_identity)})
    server = grpc.aio.server(options=OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    await serve_until_sigterm(server, "127.0.0.1", port, "echo")


async def serve_until_sigterm(server, host: str, port: int, what: str) -> None:
    """Bind a grpc.aio server, print "<what> listening on HOST:PORT" and serve until SIGTERM."""
    bound = server.add_insecure_port(f"{host}:{port}")
    await server.start()
    print(f"{what} listening on {host}:{bound}", flush=True)
    stopped = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopped.set)
    await stopped.wait()
    await server.stop(0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qpart.testbed.echo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--reply-bytes", type=int, default=64, help="bytes of every reply")
    parser.add_argument("--aio", action="store_true", help="grpc.aio instead of the thread pool")
    parser.add_argument("--workers", type=int, default=320, help="thread pool size (and concurrent RPCs)")
    args = parser.parse_args(argv)
    reply = bytes(args.reply_bytes)
    if args.aio:
        asyncio.run(serve_aio(args.port, reply))
    else:
        serve_threads(args.port, reply, args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
