"""The single place where qpart errors and gRPC status codes meet.

Servers decorate servicer methods with `servicer_method`: a QpartError becomes its status code and
message; anything else becomes INTERNAL with a generic message while the traceback goes to the log.
Clients wrap calls (and stream iteration) in `rpc_errors()` to get the same QpartError subclasses
back from a grpc.RpcError.
"""
import contextlib
import functools
import inspect
import logging

import grpc
from google.protobuf.message import DecodeError, Message

from qpart.common import errors

log = logging.getLogger("qpart.rpc")

_ERROR_CLASSES = [
    errors.InvalidArgument, errors.NotFound, errors.FailedPrecondition, errors.OutOfRange,
    errors.ResourceExhausted, errors.Unauthenticated, errors.PermissionDenied, errors.Unavailable,
    errors.DeadlineExceeded, errors.Cancelled, errors.DataLoss, errors.Internal,
]
_BY_STATUS = {cls.status: cls for cls in _ERROR_CLASSES}
GENERIC_INTERNAL_MESSAGE = "internal server error; the server log has the details"


def status_code(error: errors.QpartError) -> grpc.StatusCode:
    return grpc.StatusCode[error.status]


def error_from_status(code: grpc.StatusCode | None, details: str | None) -> errors.QpartError:
    name = code.name if code is not None else "UNKNOWN"
    cls = _BY_STATUS.get(name, errors.QpartError)
    error = cls(details or name)
    if cls is errors.QpartError:
        error.status = name
    return error


def from_rpc_error(error: grpc.RpcError) -> errors.QpartError:
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    return error_from_status(code, details)


@contextlib.contextmanager
def rpc_errors():
    """Turn a grpc.RpcError raised inside the block into the matching QpartError."""
    try:
        yield
    except grpc.RpcError as e:
        raise from_rpc_error(e) from None


class Malformed:
    """A request whose bytes did not parse as its message type; the servicer answers INVALID_ARGUMENT."""

    def __init__(self, type_name: str, error: Exception):
        self.type_name, self.error = type_name, error


def lenient_deserializer(message_cls):
    """FromString that returns Malformed instead of raising, so that bad bytes get INVALID_ARGUMENT
    (gRPC itself would answer INTERNAL)."""
    def parse(data: bytes):
        try:
            return message_cls.FromString(data)
        except DecodeError as e:
            return Malformed(message_cls.DESCRIPTOR.full_name, e)
    return parse


def checked(request, observer, rpc: str):
    """The request, reported to the observer; a Malformed one raises InvalidArgument (for async servicers too)."""
    if isinstance(request, Malformed):
        raise errors.InvalidArgument(f"the request is not a valid {request.type_name} message: {request.error}")
    if observer is not None:
        observer.received(rpc, request)
    return request


def _checked_stream(requests, observer, rpc: str):
    for request in requests:
        yield checked(request, observer, rpc)


def _request(request, observer, rpc: str):
    if isinstance(request, (Message, Malformed)):
        return checked(request, observer, rpc)
    return _checked_stream(request, observer, rpc)


def error_status(method: str, error: Exception) -> tuple[grpc.StatusCode, str]:
    """The status and message a call that raised `error` ends with, logged: a QpartError's own, anything else
    INTERNAL with a generic message (call it in the except block: the traceback goes to the log)."""
    if isinstance(error, errors.QpartError):
        log.info("%s failed: %s: %s", method, error.status, error)
        return status_code(error), str(error)
    log.exception("unexpected error in %s", method)
    return grpc.StatusCode.INTERNAL, GENERIC_INTERNAL_MESSAGE


def _fail(context: grpc.ServicerContext, method: str, error: Exception) -> None:
    """Abort the call with the status the error maps to (nothing to answer if the client has gone)."""
    if not isinstance(error, errors.QpartError) and not context.is_active():
        log.info("%s: client cancelled (%s)", method, type(error).__name__)
        return
    context.abort(*error_status(method, error))


def _status(error: Exception, context: grpc.ServicerContext) -> str:
    if isinstance(error, errors.QpartError):
        return error.status
    return "INTERNAL" if context.is_active() else "CANCELLED"


def servicer_method(method):
    """Decorate a servicer method (unary or streaming either way): bad bytes and QpartErrors become
    their status codes, anything else INTERNAL with a generic message (the traceback goes to the log),
    and each call is reported to the servicer's `observer` (metrics, request ids, logs) if it has one."""
    name = method.__name__
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def streaming(self, request, context):
            observer = getattr(self, "observer", None)
            call = observer.begin(name, context) if observer else None
            status = "OK"
            try:
                for response in method(self, _request(request, observer, name), context):
                    if observer:
                        observer.sent(name, response)
                    yield response
            except Exception as e:  # noqa: BLE001 - every error is mapped to a status here
                status = _status(e, context)
                _fail(context, name, e)
            finally:
                if observer:
                    observer.end(call, status if context.is_active() or status != "OK" else "CANCELLED")
        return streaming

    @functools.wraps(method)
    def unary(self, request, context):
        observer = getattr(self, "observer", None)
        call = observer.begin(name, context) if observer else None
        status = "OK"
        try:
            response = method(self, _request(request, observer, name), context)
            if observer:
                observer.sent(name, response)
            return response
        except Exception as e:  # noqa: BLE001
            status = _status(e, context)
            _fail(context, name, e)
        finally:
            if observer:
                observer.end(call, status)
    return unary
