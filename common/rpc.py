"""The single place where qpart errors and gRPC status codes meet.

Servers decorate servicer methods with `servicer_method`: a QpartError becomes its status code and
message; anything else becomes INTERNAL with a generic message while the traceback goes to the log.
Clients wrap calls with `rpc_errors()` (or iterate through `translate_stream`) to get the same
QpartError subclasses back from a grpc.RpcError.
"""
import contextlib
import functools
import inspect
import logging
from typing import Iterator

import grpc

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


def translate_stream(responses: Iterator) -> Iterator:
    """Iterate a server stream, raising QpartError instead of grpc.RpcError."""
    with rpc_errors():
        yield from responses


def _abort(context: grpc.ServicerContext, method: str, error: Exception):
    if isinstance(error, errors.QpartError):
        log.info("%s failed: %s: %s", method, error.status, error)
        context.abort(status_code(error), str(error))
    if not context.is_active():  # the client went away; nothing to answer
        log.info("%s: client cancelled (%s)", method, type(error).__name__)
        return
    log.exception("unexpected error in %s", method)
    context.abort(grpc.StatusCode.INTERNAL, GENERIC_INTERNAL_MESSAGE)


def servicer_method(method):
    """Decorate a servicer method (unary or response-streaming) to map exceptions to status codes."""
    name = method.__qualname__
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def streaming(self, request, context):
            try:
                yield from method(self, request, context)
            except Exception as e:  # noqa: BLE001 - every error is mapped to a status here
                _abort(context, name, e)
        return streaming

    @functools.wraps(method)
    def unary(self, request, context):
        try:
            return method(self, request, context)
        except Exception as e:  # noqa: BLE001
            _abort(context, name, e)
    return unary
