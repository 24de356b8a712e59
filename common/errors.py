"""The one error hierarchy of qpart.

Every error a peer can cause is a QpartError subclass whose `status` names the gRPC status code it
maps to; `qpart.common.rpc` does the mapping in both directions, in one place.
"""


class QpartError(Exception):
    """Base of every error qpart raises on purpose."""

    status = "INTERNAL"


class InvalidArgument(QpartError, ValueError):
    """The request or data is malformed: a bad size, shape, bit width or value."""

    status = "INVALID_ARGUMENT"


class NotFound(QpartError, LookupError):
    """A model, plan, head or file that does not exist."""

    status = "NOT_FOUND"


class FailedPrecondition(QpartError):
    """The request is well formed but the system is not in a state to serve it (e.g. stale plan)."""

    status = "FAILED_PRECONDITION"


class OutOfRange(QpartError):
    """A value outside the range the system supports (e.g. a resume offset past the end)."""

    status = "OUT_OF_RANGE"


class ResourceExhausted(QpartError):
    """A size or rate limit was hit; retry later or with less."""

    status = "RESOURCE_EXHAUSTED"


class Unauthenticated(QpartError):
    status = "UNAUTHENTICATED"


class PermissionDenied(QpartError):
    status = "PERMISSION_DENIED"


class Unavailable(QpartError):
    """The server cannot be reached or is shutting down; safe to retry."""

    status = "UNAVAILABLE"


class DeadlineExceeded(QpartError):
    status = "DEADLINE_EXCEEDED"


class Cancelled(QpartError):
    status = "CANCELLED"


class DataLoss(QpartError):
    """Bytes arrived corrupted, e.g. a head whose content hash does not match."""

    status = "DATA_LOSS"


class Internal(QpartError):
    status = "INTERNAL"
