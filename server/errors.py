"""Engine errors -> gRPC status codes: one table, used by every RPC.

=====================================  =====================  =====================================================
error                                  status                 meaning for the client
=====================================  =====================  =====================================================
``InvalidInputError`` (and subclasses:  INVALID_ARGUMENT       the request can never succeed as sent: NaN or
pose, intrinsics, frame),                                     non-orthonormal pose, wrong image size, bad intrinsics,
``WireFormatError``                                           bad encoding, malformed bytes
``NotFoundError``                      NOT_FOUND              no such world (or saved world, or generator)
``AlreadyExistsError``                 ALREADY_EXISTS         a world with that id exists
``LimitExceededError``                 RESOURCE_EXHAUSTED     over a limit from GetServerInfo (poses per call,
                                                              resolution, message size)
``PreconditionError``                  FAILED_PRECONDITION    valid, but not now (no data folder, already loaded)
``StorageError``                       DATA_LOSS              a save on disk is missing, corrupt or of an unknown
                                                              format version: the data, not the request, is bad
``MemoryError``                        RESOURCE_EXHAUSTED     the server ran out of memory serving this request
anything else                          INTERNAL               a server bug; the message names the exception type
=====================================  =====================  =====================================================

The message of an engine error names the offending value and reaches the client as is.
"""

from __future__ import annotations

import logging

import grpc

from worldweave.bridge.errors import (
    InvalidInputError,
    LimitExceededError,
    NotFoundError,
    PreconditionError,
    StorageError,
    WorldweaveError,
)
from worldweave.sim_clients.conversions import WireFormatError

logger = logging.getLogger(__name__)


class AlreadyExistsError(WorldweaveError):
    """A world with the requested id already exists."""


STATUS_BY_ERROR: tuple[tuple[type[BaseException], grpc.StatusCode], ...] = (
    (InvalidInputError, grpc.StatusCode.INVALID_ARGUMENT),
    (WireFormatError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (AlreadyExistsError, grpc.StatusCode.ALREADY_EXISTS),
    (LimitExceededError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (PreconditionError, grpc.StatusCode.FAILED_PRECONDITION),
    (StorageError, grpc.StatusCode.DATA_LOSS),
    (MemoryError, grpc.StatusCode.RESOURCE_EXHAUSTED),
)
"""First match wins; order subclasses before their bases."""


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message the client receives for ``error``.

    Errors outside the table are server bugs: they are logged with their traceback and answered INTERNAL with the
    exception's type and message, so the client can report them.
    """
    for error_type, code in STATUS_BY_ERROR:
        if isinstance(error, error_type):
            return code, str(error) or type(error).__name__
    logger.error("internal error while serving a request", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal server error ({type(error).__name__}: {error}); see the server log"
