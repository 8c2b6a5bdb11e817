"""Gateway errors. Each class carries the gRPC status name it is sent as in an ``error`` reply's ``code`` field,
so an engine sees the same codes whether it talks to the server directly or through the gateway."""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose; ``code`` is the gRPC status name sent to the engine."""

    code: str = "INTERNAL"
    request_id: int | None = None
    """The ``id`` of the request that failed, when it could be read (echoed in the error reply)."""


class InvalidMessageError(GatewayError):
    """The message is not valid msgpack, or a field is missing, unknown, of the wrong type or out of range."""

    code = "INVALID_ARGUMENT"


class MessageTooLargeError(GatewayError):
    """The message (or a list or string in it) is larger than the gateway's limit."""

    code = "RESOURCE_EXHAUSTED"


class SchemaVersionError(GatewayError):
    """The message's ``version`` (schema major version) is not one this gateway speaks."""

    code = "FAILED_PRECONDITION"


class HandshakeRequiredError(GatewayError):
    """A request other than ``hello`` arrived on a connection that has not declared its convention."""

    code = "FAILED_PRECONDITION"


class ServerError(GatewayError):
    """The worldweave server answered with an error status (its code and message are passed on as they are)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
