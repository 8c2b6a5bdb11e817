"""The one error family of worldweave, on both sides of the wire, and its gRPC status mapping.

Every error raised on purpose (by the engine, the server, the client SDK, the gateway) is a ``WorldweaveError``
whose ``code`` names the gRPC status it travels as. The server answers an error with its ``code``; the client
turns a status back into the same class (``error_for_status``), so one ``except NotFoundError`` works in-process
and across the network alike.

=====================  ===========================  ==============================================================
status (``code``)      class                        meaning for the caller
=====================  ===========================  ==============================================================
INVALID_ARGUMENT       ``InvalidInputError``        can never succeed as sent: NaN or non-rigid pose, bad
                                                    intrinsics, wrong image size, malformed bytes (the message
                                                    names the value)
NOT_FOUND              ``NotFoundError``            no such world, saved world, generator or checkpoint
ALREADY_EXISTS         ``AlreadyExistsError``       a world with that id exists
RESOURCE_EXHAUSTED     ``LimitExceededError``       over a limit the handshake states (poses per call,
                                                    resolution, message size, work)
FAILED_PRECONDITION    ``PreconditionError``        valid, but not now (expired version, no data folder)
DATA_LOSS              ``StorageError``             a save on disk is missing, corrupt or of an unknown format
UNAVAILABLE            ``ServerUnavailableError``   no server answered (or it is shutting down)
DEADLINE_EXCEEDED      ``DeadlineExceededError``    the call ran past its deadline
UNIMPLEMENTED          ``NotSupportedError``        the server does not implement this call
UNAUTHENTICATED,       ``AuthenticationError``      missing or wrong credentials
PERMISSION_DENIED
anything else          ``ServerError``              a server bug (INTERNAL, UNKNOWN, ...): see the server's log
=====================  ===========================  ==============================================================

This module is part of the wire layer: it imports nothing but the standard library.
"""

from __future__ import annotations


class WorldweaveError(Exception):
    """Root of every error worldweave raises on purpose. ``code``: the gRPC status name it travels as.
    ``retry_after_s``: on the client side, the delay the server suggested before trying again, seconds (from the
    ``retry-after-ms`` trailing metadata of an admission refusal, ``RETRY_AFTER_METADATA_KEY``); None when the
    server suggested none (the same request would fail again, or no server was reached)."""

    code: str = "INTERNAL"
    retry_after_s: float | None = None

    def __init__(self, message: str = "", *, code: str | None = None, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if retry_after_s is not None:
            self.retry_after_s = retry_after_s

    def __str__(self) -> str:  # KeyError (a base of NotFoundError) would quote the message
        return str(self.args[0]) if self.args else ""


class InvalidInputError(WorldweaveError, ValueError):
    """A value that can never be valid (NaN, wrong shape, bad range); the message names it."""

    code = "INVALID_ARGUMENT"


class InvalidPoseError(InvalidInputError):
    """A pose is not a finite rigid transform (non-orthonormal rotation, NaN, zero quaternion)."""


class InvalidIntrinsicsError(InvalidInputError):
    """Camera intrinsics are not positive, finite or consistent with the image size."""


class InvalidFrameError(InvalidInputError):
    """An image or depth map has the wrong shape, dtype or values."""


class WireFormatError(InvalidInputError):
    """A message or array does not follow the wire format (size, dtype, encoding, pose form, undecodable bytes)."""


class NotFoundError(WorldweaveError, KeyError):
    """A named thing (world, anchor, saved folder, generator) does not exist."""

    code = "NOT_FOUND"


class AlreadyExistsError(WorldweaveError):
    """A world with the requested id already exists."""

    code = "ALREADY_EXISTS"


class LimitExceededError(WorldweaveError):
    """A request is larger than a stated limit (poses per call, resolution, points, message size)."""

    code = "RESOURCE_EXHAUSTED"


class PreconditionError(WorldweaveError):
    """The request is valid but the object is not in a state to serve it (e.g. an expired version)."""

    code = "FAILED_PRECONDITION"


class StorageError(WorldweaveError):
    """A saved world on disk is missing, corrupt or of an unknown format version: the data, not the request."""

    code = "DATA_LOSS"


class ServerUnavailableError(WorldweaveError, ConnectionError):
    """No server answered at the address, or it is shutting down."""

    code = "UNAVAILABLE"


class DeadlineExceededError(WorldweaveError, TimeoutError):
    """A call ran past its deadline."""

    code = "DEADLINE_EXCEEDED"


class NotSupportedError(WorldweaveError):
    """The server does not implement this call."""

    code = "UNIMPLEMENTED"


class AuthenticationError(WorldweaveError, PermissionError):
    """The server refused the call's credentials: pass the right token."""

    code = "UNAUTHENTICATED"


class ServerError(WorldweaveError):
    """Any other failure on the server side (INTERNAL, UNKNOWN, ...): a bug; the server logged its traceback."""


ERROR_BY_CODE: dict[str, type[WorldweaveError]] = {
    cls.code: cls
    for cls in (
        InvalidInputError, NotFoundError, AlreadyExistsError, LimitExceededError, PreconditionError, StorageError,
        ServerUnavailableError, DeadlineExceededError, NotSupportedError, AuthenticationError,
    )
} | {"PERMISSION_DENIED": AuthenticationError}
"""The class a status name comes back as; names not listed come back as ``ServerError``."""

RETRY_AFTER_METADATA_KEY = "retry-after-ms"
"""Trailing metadata of a RESOURCE_EXHAUSTED refusal by admission control (too many calls waiting for a world or
for the server): the suggested delay before retrying, milliseconds, as a decimal string."""


def retry_after_from_metadata(trailing_metadata: object) -> float | None:
    """The server's suggested delay before a retry, seconds, from a call's trailing metadata (pairs of key and
    value, as grpc gives them; None is no metadata): the ``RETRY_AFTER_METADATA_KEY`` value / 1000, or None when
    absent or not a number of milliseconds >= 0."""
    for key, value in trailing_metadata or ():
        if key == RETRY_AFTER_METADATA_KEY:
            try:
                milliseconds = float(value)
            except (TypeError, ValueError):
                return None
            return milliseconds / 1000 if 0 <= milliseconds < float("inf") else None
    return None


def error_for_status(code: str, message: str, *, retry_after_s: float | None = None) -> WorldweaveError:
    """The error a client raises for a status ``code`` (its name, e.g. ``"NOT_FOUND"``) and its details;
    ``retry_after_s``: the server's suggested delay (``retry_after_from_metadata`` of the call's trailing metadata)."""
    return ERROR_BY_CODE.get(code, ServerError)(message, code=code, retry_after_s=retry_after_s)
