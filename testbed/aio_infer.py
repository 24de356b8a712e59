"""qpart's Infer on grpc.aio, so that bench/fleet.py can measure it beside the thread pool qpart-server runs.

    python -m qpart.testbed.aio_infer --dispatch inline|executor [qpart-server flags...]

One process: qpart-server as it ships (RunningServer: the thread pool serving every RPC, health, metrics) and,
on a second port, a grpc.aio server serving only Infer over the same QpartCore (same plans, same signer, same
batcher), with the same stream rules (StreamGuard slot, idle watchdog, plan id once per stream, drain) and the
same per-message metrics. --dispatch inline runs each message's decode, tail and answer on the event loop
(valid only with batching off: a batch waits for other streams' messages, which an occupied loop never
reads); --dispatch executor hands each message to a thread pool of --workers threads and awaits it.

Prints qpart-server's "listening on HOST:PORT" line, then "aio Infer listening on HOST:PORT"; runs until
SIGTERM. The benchmark plans and fetches heads on the first port and replays Infer on the second.
"""
import argparse
import asyncio
import sys
from concurrent import futures

import grpc

from qpart.common.errors import InvalidArgument, QpartError, Unavailable
from qpart.common.rpc import GENERIC_INTERNAL_MESSAGE, checked, lenient_deserializer, log, status_code
from qpart.server.serving import convert
from qpart.server.serving.main import RunningServer, parse_args
from qpart.server.serving.observe import RpcObserver
from qpart.server.serving.servicer import SERVICE, SplitInferenceServicer
from qpart.testbed.echo import serve_until_sigterm
from qpart.v1 import service_pb2 as spb


class AioInfer(SplitInferenceServicer):
    def __init__(self, running: RunningServer, dispatch: str, pool: futures.Executor | None):
        super().__init__(running.core, RpcObserver(running.metrics))
        self.dispatch, self.pool = dispatch, pool

    async def Infer(self, requests, context):
        loop, task = asyncio.get_running_loop(), asyncio.current_task()
        call, status = self.observer.begin("Infer", context), "OK"
        try:
            identity = self._identity(context)
            with self._stream(identity, context, lambda: loop.call_soon_threadsafe(task.cancel)) as guard:
                stream = self.core.infer_stream(identity)
                async for request in requests:
                    request = checked(request, self.observer, "Infer")
                    guard.touch()
                    args = (request.plan_id, request.batch.request_ids, convert.batch_tensors(request.batch),
                            request.deadline_s)
                    result = (stream.infer(*args) if self.dispatch == "inline"
                              else await loop.run_in_executor(self.pool, stream.infer, *args))
                    response = convert.infer_response(result)
                    self.observer.sent("Infer", response)
                    yield response
                    guard.touch()
                    if self.core.streams_must_end():
                        raise Unavailable("the server is draining: connect again and resend the inputs without an answer")
        except asyncio.CancelledError:
            status = "CANCELLED"
            raise
        except QpartError as e:
            status = e.status
            await context.abort(status_code(e), str(e))
        except Exception:  # noqa: BLE001 - every error is mapped to a status here
            log.exception("unexpected error in Infer")
            status = "INTERNAL"
            await context.abort(grpc.StatusCode.INTERNAL, GENERIC_INTERNAL_MESSAGE)
        finally:
            self.observer.end(call, status)


async def serve(running: RunningServer, dispatch: str) -> None:
    settings = running.settings
    pool = futures.ThreadPoolExecutor(max_workers=settings.workers) if dispatch == "executor" else None
    servicer = AioInfer(running, dispatch, pool)
    handler = grpc.method_handlers_generic_handler(SERVICE.full_name, {"Infer": grpc.stream_stream_rpc_method_handler(
        servicer.Infer, request_deserializer=lenient_deserializer(spb.InferRequest),
        response_serializer=spb.InferResponse.SerializeToString)})
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", settings.max_message_bytes),
                                      ("grpc.max_send_message_length", settings.max_message_bytes)],
                             maximum_concurrent_rpcs=settings.max_streams or max(settings.workers - 8, 1))
    server.add_generic_rpc_handlers((handler,))
    await serve_until_sigterm(server, settings.host, 0, "aio Infer")
    if pool is not None:
        pool.shutdown(wait=False)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m qpart.testbed.aio_infer", description=__doc__, add_help=False,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dispatch", choices=("inline", "executor"), required=True)
    args, rest = parser.parse_known_args(argv)
    settings = parse_args(rest)
    if settings.tls_cert or settings.processes > 1:
        raise InvalidArgument("the aio Infer experiment runs plaintext in one process (no --tls-cert, no --processes)")
    if args.dispatch == "inline" and settings.batch_max_inputs > 1:
        raise InvalidArgument("--dispatch inline cannot batch: a batch waits for messages an occupied loop never reads")
    running = RunningServer(settings)
    print(f"qpart-server listening on {settings.host}:{running.port}", flush=True)
    asyncio.run(serve(running, args.dispatch))
    running.stop(0, notice=0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
