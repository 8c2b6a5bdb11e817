"""Optional bearer-token authentication and TLS for the server.

* **Token.** With a token configured, every call must carry the metadata ``authorization: Bearer <token>``; a
  missing or wrong token is answered UNAUTHENTICATED before the request reaches the service. The standard health
  check (``grpc.health.v1.Health``) stays open so that probes work without the secret. Tokens are compared in
  constant time. Without TLS a token crosses the network in clear text: use it with TLS off this machine.
* **TLS.** A PEM certificate chain and its private key (``worldweave serve --tls-cert --tls-key``) make the port a
  TLS port; clients pass the certificate (or its CA) as their root.
"""

from __future__ import annotations

import hmac
from pathlib import Path

import grpc

from worldweave.proto.auth import AUTHORIZATION_KEY, call_metadata
from worldweave.proto.errors import InvalidInputError

OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
"""Methods served without a token (health probes)."""


def _deny(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that answers UNAUTHENTICATED with ``message``."""

    async def deny(request_or_iterator, context: grpc.aio.ServicerContext) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    kind = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return kind(deny, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` (UNAUTHENTICATED), except ``OPEN_METHODS``."""

    def __init__(self, token: str) -> None:
        try:
            (_, value), = call_metadata(token)  # the very metadata a client sends
        except ValueError as error:
            raise InvalidInputError(f"the auth token: {error}") from None
        self._expected = value.encode()

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method in OPEN_METHODS:
            return handler
        values = [v for k, v in handler_call_details.invocation_metadata or () if k == AUTHORIZATION_KEY]
        if not values:
            return _deny(handler, "this server needs a bearer token: pass token=... to the client "
                                  "(metadata 'authorization: Bearer <token>')")
        value = values[0].encode() if isinstance(values[0], str) else values[0]
        if len(values) > 1 or not hmac.compare_digest(value, self._expected):
            return _deny(handler, "the bearer token is wrong (metadata 'authorization: Bearer <token>')")
        return handler


def server_credentials(cert_file: Path, key_file: Path) -> grpc.ServerCredentials:
    """TLS credentials from a PEM certificate chain and its PEM private key; unreadable files are ``InvalidInputError``
    naming them."""
    pems = []
    for name, path in (("certificate", cert_file), ("private key", key_file)):
        try:
            data = Path(path).read_bytes()
        except OSError as error:
            raise InvalidInputError(f"cannot read the TLS {name} {path}: {error.strerror}") from None
        if b"-----BEGIN" not in data:
            raise InvalidInputError(f"the TLS {name} {path} is not PEM (no '-----BEGIN' line)")
        pems.append(data)
    certificate, key = pems
    return grpc.ssl_server_credentials([(key, certificate)])
