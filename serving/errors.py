"""One error type for the server and the clients, carrying a gRPC status code."""

from __future__ import annotations

import grpc

# HTTP status for each gRPC code, as TensorFlow Serving's REST front end maps them.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# tf.errors.OpError.error_code uses the same integers as gRPC status codes.
_BY_VALUE = {c.value[0]: c for c in grpc.StatusCode}


def code_from_int(value: int) -> grpc.StatusCode:
    """gRPC status code for the integer value used by TensorFlow and protos."""
    return _BY_VALUE.get(int(value), grpc.StatusCode.UNKNOWN)


class ServingError(Exception):
    """A request failed with a gRPC status ``code`` and a human ``message``.

    Raised inside the server (and turned into a gRPC status or an HTTP error
    ``{"error": message}``) and by the clients for a failed call.
    """

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)


def invalid(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)


def failed_precondition(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.FAILED_PRECONDITION, message)


def too_large(message: str) -> ServingError:
    """RESOURCE_EXHAUSTED, as gRPC itself answers for an oversized message."""
    return ServingError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)
