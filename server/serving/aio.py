"""qpart-server's gRPC runtime: one grpc.aio server on an event loop of its own thread.

Infer is served on the loop: a stream waits for its next message without holding a thread, and each message's
tail runs in the thread pool, one handoff per message; with dynamic batching each message is checked and
decoded on the loop and waits there as a future, and the batch runs in the pool (one handoff per batch). Every
other RPC is SplitInferenceServicer's synchronous method, run in the same pool with SyncContext, the part of
grpc.ServicerContext those methods use. grpc.aio against grpc's thread-pool server, measured side by side:
docs/benchmarks/fleet.md.
"""
import asyncio
import concurrent.futures
import contextvars
import threading
from concurrent import futures

import grpc

from qpart.common.errors import DeadlineExceeded, Unavailable
from qpart.common.rpc import checked, error_status, lenient_deserializer
from qpart.server.serving import convert
from qpart.server.serving.servicer import SERVICE, SplitInferenceServicer
from qpart.v1 import service_pb2 as spb

_END = object()
IDLE = (grpc.StatusCode.CANCELLED, "the server cancelled the stream: idle for longer than ServerLimits.stream_idle_s")


class LoopThread:
    """An asyncio event loop running in a daemon thread; call() runs a coroutine there and waits for it."""

    def __init__(self):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="grpc-aio", daemon=True)
        self.thread.start()

    def call(self, coroutine, timeout: float | None = None):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def close(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, details: str):
        super().__init__(details)
        self.code, self.details = code, details


class SyncContext:
    """A synchronous servicer method's view of its grpc.aio call, while the method runs in the thread pool and the
    call's task waits on the loop: abort raises Aborted (the task aborts the call with it), cancel cancels the
    task, is_active turns false once the call is done. Infer, a coroutine, uses its cancel too (the idle
    watchdog's)."""

    def __init__(self, context: grpc.aio.ServicerContext, loop: asyncio.AbstractEventLoop, task: asyncio.Task):
        self._context, self._loop, self._task = context, loop, task
        self._active = True
        self.cancelled = False          # by the server (the idle watchdog): the call ends CANCELLED
        context.add_done_callback(self._ended)

    def _ended(self, _context) -> None:
        self._active = False

    def invocation_metadata(self):
        return self._context.invocation_metadata()

    def peer(self) -> str:
        return self._context.peer()

    def auth_context(self) -> dict:
        return self._context.auth_context()

    def is_active(self) -> bool:
        return self._active

    def cancel(self) -> None:
        self._active, self.cancelled = False, True
        self._loop.call_soon_threadsafe(self._task.cancel)

    def abort(self, code: grpc.StatusCode, details: str):
        raise Aborted(code, details)


class _Requests:
    """A blocking iterator over a grpc.aio call's requests, for a method running in the thread pool."""

    def __init__(self, requests, loop: asyncio.AbstractEventLoop):
        self._requests, self._loop = requests, loop
        self._reading: concurrent.futures.Future | None = None

    async def _read(self):
        try:
            return await anext(self._requests)
        except StopAsyncIteration:
            return _END

    def __iter__(self):
        return self

    def __next__(self):
        self._reading = asyncio.run_coroutine_threadsafe(self._read(), self._loop)
        request = self._reading.result()        # concurrent.futures.CancelledError once the call has ended
        if request is _END:
            raise StopIteration
        return request

    def cancel(self) -> None:
        if self._reading is not None:
            self._reading.cancel()


class _InPool:
    """One call of a synchronous method in the pool: every step runs in the call's own contextvars context (the
    observer's request id), and whatever way the call ends, the method's generator is closed once no thread runs
    it (its finally blocks release the stream's slot)."""

    def __init__(self, pool: futures.Executor):
        self.pool, self.context = pool, contextvars.copy_context()
        self.running: concurrent.futures.Future | None = None

    async def run(self, fn, *args):
        self.running = self.pool.submit(self.context.run, fn, *args)
        return await asyncio.wrap_future(self.running)

    def close(self, generator) -> None:
        def close(_=None):
            self.pool.submit(self.context.run, generator.close)
        if self.running is not None and not self.running.done():
            self.running.add_done_callback(close)
        else:
            close()


def _failure(error: BaseException, sync: SyncContext) -> tuple:
    """The status a call that raised `error` ends with: the method's abort, or CANCELLED when the server cancelled it
    (the idle watchdog); a cancellation the client asked for is raised on."""
    if isinstance(error, Aborted):
        return error.code, error.details
    if sync.cancelled:
        return IDLE
    raise error


def _adapt(method, client_streaming: bool, server_streaming: bool, pool: futures.Executor):
    """An async handler running the synchronous servicer method `method(request_or_iterator, context)`."""
    if not server_streaming:
        async def unary(request, context):
            loop = asyncio.get_running_loop()
            sync = SyncContext(context, loop, asyncio.current_task())
            requests = _Requests(request, loop) if client_streaming else request
            try:
                return await _InPool(pool).run(method, requests, sync)
            except (asyncio.CancelledError, Aborted) as e:
                failure = _failure(e, sync)
            finally:
                if client_streaming:
                    requests.cancel()
            await context.abort(*failure)
        return unary

    async def streaming(request, context):
        loop = asyncio.get_running_loop()
        sync = SyncContext(context, loop, asyncio.current_task())
        requests = _Requests(request, loop) if client_streaming else request
        call = _InPool(pool)
        responses = method(requests, sync)            # a generator: nothing runs until the first next()
        failure = None
        try:
            while (response := await call.run(next, responses, _END)) is not _END:
                yield response
        except (asyncio.CancelledError, Aborted) as e:
            failure = _failure(e, sync)
        finally:
            if client_streaming:
                requests.cancel()
            call.close(responses)
        if failure is not None:
            await context.abort(*failure)
    return streaming


class AioServicer(SplitInferenceServicer):
    """Infer as a coroutine on the loop (a stream per device session: qpart.v1's proto says its rules); the other
    methods are the synchronous servicer's, adapted (_adapt)."""

    def __init__(self, core, observer, pool: futures.Executor):
        super().__init__(core, observer)
        self.pool = pool

    async def infer(self, requests, context):
        call, status, failure = self.observer.begin("Infer", context), "OK", None
        sync = SyncContext(context, asyncio.get_running_loop(), asyncio.current_task())    # for its cancel
        try:
            identity = self._identity(context)
            with self._stream(identity, context, sync.cancel) as guard:
                stream = self.core.infer_stream(identity)
                async for request in requests:
                    request = checked(request, self.observer, "Infer")
                    guard.touch()
                    response = convert.infer_response(await self._answer(stream, request))
                    self.observer.sent("Infer", response)
                    yield response
                    guard.touch()
                    if self.core.streams_must_end():
                        raise Unavailable("the server is draining: connect again and resend the inputs without an answer")
        except asyncio.CancelledError as e:
            status = "CANCELLED"
            failure = _failure(e, sync)
        except Exception as e:  # noqa: BLE001 - every error is mapped to a status here
            failure = error_status("Infer", e)
            status = failure[0].name
        finally:
            self.observer.end(call, status)
        if failure is not None:     # aborted outside the except: the error's frames (and the message) are freed now
            request = None
            await context.abort(*failure)

    async def _answer(self, stream, request):
        args = (request.plan_id, request.batch.request_ids, convert.batch_tensors(request.batch), request.deadline_s)
        core = self.core
        if core.batcher is None:
            return await asyncio.get_running_loop().run_in_executor(self.pool, stream.infer, *args)
        session = stream.session_for(args[0])
        admitted = core.admit(session, *args[1:])
        try:
            await core.batcher.arun(admitted.lane, admitted.item, admitted.tail, core.admission.slot, session.most,
                                    self.pool)
        except DeadlineExceeded as e:
            return core.shed(admitted, e)
        return core.answer(admitted)


_HANDLERS = {(False, False): grpc.unary_unary_rpc_method_handler, (False, True): grpc.unary_stream_rpc_method_handler,
             (True, False): grpc.stream_unary_rpc_method_handler, (True, True): grpc.stream_stream_rpc_method_handler}


def add_to_server(servicer: AioServicer, server: grpc.aio.Server, pool: futures.Executor) -> None:
    """Register every method of the service with lenient request parsing (see qpart.common.rpc)."""
    handlers = {}
    for method in SERVICE.methods:
        streams = (method.client_streaming, method.server_streaming)
        behaviour = (servicer.infer if method.name == "Infer"
                     else _adapt(getattr(servicer, method.name), *streams, pool))
        handlers[method.name] = _HANDLERS[streams](behaviour,
                                        request_deserializer=lenient_deserializer(getattr(spb, method.input_type.name)),
                                        response_serializer=getattr(spb, method.output_type.name).SerializeToString)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),))
