"""The gateway's own errors: a message it cannot read. Each is a ``WorldweaveError`` whose ``code`` (the gRPC
status name) is sent in an ``error`` reply, so an engine sees the same codes whether it talks to the server
directly or through the gateway; errors the server answers pass through as the SDK raises them."""

from __future__ import annotations

from worldweave.proto.errors import (
    InvalidInputError,
    LimitExceededError,
    PreconditionError,
    WorldweaveError,
)


class GatewayError(WorldweaveError):
    """Raised while reading an engine's message; ``request_id`` is the envelope's ``id`` when it could be read
    (echoed in the error reply)."""

    request_id: int | None = None


class InvalidMessageError(GatewayError, InvalidInputError):
    """The message is not valid msgpack, or a field is missing, unknown, of the wrong type or out of range."""


class MessageTooLargeError(GatewayError, LimitExceededError):
    """The message (or a list or string in it) is larger than the gateway's limit."""


class SchemaVersionError(GatewayError, PreconditionError):
    """The message's ``version`` (schema major version) is not one this gateway speaks."""


class HandshakeRequiredError(GatewayError, PreconditionError):
    """A request other than ``hello`` arrived on a connection that has not declared its convention."""
