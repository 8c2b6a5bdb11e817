"""Errors -> gRPC status codes: one rule, used by every RPC.

Every ``WorldweaveError`` travels as the status its ``code`` names (the table is in ``worldweave.proto.errors``),
with its message, which names the offending value. Besides those, ``MemoryError`` is RESOURCE_EXHAUSTED (the server
ran out of memory serving this request). Anything else is a server bug: logged with its traceback and answered
INTERNAL with the exception's type and message, so the client can report it.
"""

from __future__ import annotations

import logging

import grpc

from worldweave.proto.errors import WorldweaveError

logger = logging.getLogger(__name__)


def status_for(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message the client receives for ``error``."""
    if isinstance(error, (WorldweaveError, MemoryError)):
        code = grpc.StatusCode[error.code] if isinstance(error, WorldweaveError) else grpc.StatusCode.RESOURCE_EXHAUSTED
        return code, str(error) or type(error).__name__
    logger.error("internal error while serving a request", exc_info=error)
    return grpc.StatusCode.INTERNAL, f"internal server error ({type(error).__name__}: {error}); see the server log"
