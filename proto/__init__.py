"""The wire layer both sides stand on: ``world.proto`` and its generated code, the one ``Pose`` / ``Quaternion`` /
``Intrinsics``, and the one error family (``WorldweaveError`` and its subclasses, each naming the gRPC status it
travels as).

    from worldweave.proto import Pose, Intrinsics, WorldweaveError
"""

from worldweave.proto.errors import (
    AlreadyExistsError,
    AuthenticationError,
    DeadlineExceededError,
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    NotSupportedError,
    PreconditionError,
    ServerError,
    ServerUnavailableError,
    WireFormatError,
    WorldweaveError,
)
from worldweave.proto.geometry import Intrinsics, Pose, Quaternion

__all__ = [
    "AlreadyExistsError", "AuthenticationError", "DeadlineExceededError", "Intrinsics", "InvalidInputError",
    "LimitExceededError", "NotFoundError", "NotSupportedError", "Pose", "PreconditionError", "Quaternion",
    "ServerError", "ServerUnavailableError", "WireFormatError", "WorldweaveError",
]
