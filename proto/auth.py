"""The auth metadata rule, one definition for the client that sends it and the server that checks it.

With a token, every call carries the gRPC metadata ``authorization: Bearer <token>``. Part of the wire layer:
imports nothing but the wire's own errors.
"""

from __future__ import annotations

from worldweave.proto.errors import InvalidInputError

AUTHORIZATION_KEY = "authorization"
"""Metadata key of the bearer token (gRPC metadata keys are lower case)."""


def call_metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    """The metadata sent with every call: ``authorization: Bearer <token>``, if there is a token (it must be
    non-empty printable ASCII without spaces, else ``InvalidInputError``)."""
    if token is None:
        return ()
    if not token or not token.isascii() or not token.isprintable() or " " in token:
        raise InvalidInputError("token must be non-empty printable ASCII without spaces")
    return ((AUTHORIZATION_KEY, f"Bearer {token}"),)
