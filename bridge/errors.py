"""One error root for the engine, with narrow subclasses.

The server maps each class to one gRPC status (``InvalidInputError`` -> INVALID_ARGUMENT, ``NotFoundError`` ->
NOT_FOUND, ``LimitExceededError`` -> RESOURCE_EXHAUSTED, ``PreconditionError`` -> FAILED_PRECONDITION), so a
message must name the offending value: it reaches the client as is.
"""


class WorldweaveError(Exception):
    """Root of every error the engine raises on purpose."""


class InvalidInputError(WorldweaveError, ValueError):
    """A caller passed a value that can never be valid (NaN, wrong shape, bad range)."""


class InvalidPoseError(InvalidInputError):
    """A pose is not a finite rigid transform (non-orthonormal rotation, NaN, bad quaternion)."""


class InvalidIntrinsicsError(InvalidInputError):
    """Camera intrinsics are not positive, finite or consistent with the image size."""


class InvalidFrameError(InvalidInputError):
    """An image or depth map has the wrong shape, dtype or values."""


class NotFoundError(WorldweaveError, KeyError):
    """A named thing (world, anchor, saved folder) does not exist."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable.
        return str(self.args[0]) if self.args else ""


class LimitExceededError(WorldweaveError):
    """A request is larger than a configured limit (poses per call, resolution, points)."""


class PreconditionError(WorldweaveError):
    """The request is valid but the object is not in a state to serve it (e.g. an expired version)."""


class StorageError(WorldweaveError):
    """A saved world on disk is missing, corrupt or of an unknown format version."""
