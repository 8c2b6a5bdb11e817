"""Bearer-token authentication with tenants and roles, and TLS, for the server.

* **Tokens, tenants, roles.** A ``TokenTable`` maps each token to a ``Caller``: its tenant (the namespace of worlds
  the token sees) and its role (``read-write`` or ``read-only``). With a table, every call must carry the metadata
  ``authorization: Bearer <token>`` of a listed token: a missing or unknown token is answered UNAUTHENTICATED, and
  a read-only token calling an RPC that changes worlds PERMISSION_DENIED, before the request reaches the service.
  The standard health check (``grpc.health.v1.Health``) stays open so that probes work without a secret. Tokens
  are looked up by their SHA-256 digest, so the time a lookup takes does not depend on how much of a wrong token
  matches. Without TLS a token crosses the network in clear text: use TLS off this machine.
* **The caller of a call.** The interceptor runs each admitted call as its ``Caller``; ``caller()`` answers it
  anywhere in that call (the registry resolves world ids in ``caller().tenant``'s namespace). Without auth, and
  outside calls, the caller is ``OPEN_CALLER``: the default tenant, read-write.
* **Token file** (``read_token_file``, ``worldweave serve --auth-token-file``): one ``TOKEN TENANT ROLE`` line per
  token; ``docs/security.md`` describes it.
* **TLS.** A PEM certificate chain and its private key (``worldweave serve --tls-cert --tls-key``) make the port a
  TLS port; clients pass the certificate (or its CA) as their root.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import grpc

from worldweave.proto.auth import AUTHORIZATION_KEY, call_metadata
from worldweave.proto.errors import InvalidInputError
from worldweave.proto.worldweave.v1 import world_pb2 as pb
from worldweave.server.scheduling import with_context

OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})
"""Methods served without a token (health probes)."""

Role = Literal["read-write", "read-only"]
"""What a token may do: ``read-write`` calls every RPC; ``read-only`` only ``READ_ONLY_RPCS``."""
ROLES: tuple[Role, ...] = get_args(Role)

WORLD_SERVICE = pb.DESCRIPTOR.services_by_name["WorldService"].full_name
READ_ONLY_RPCS = frozenset({
    "GetServerInfo", "GetWorld", "ListWorlds", "Render", "StreamPointCloud", "CropPointCloud", "Raycast",
    "NearestSurface", "CheckCollision", "QueryOccupancy", "WatchWorld", "ListCheckpoints",
})
"""The ``WorldService`` RPCs a read-only token may call. Every other one (Step, the edits, CreateWorld, SaveWorld,
LoadWorld, DeleteWorld, and any RPC added later until listed here) changes worlds and needs read-write. Methods of
other services (server reflection) are open to both roles."""

DEFAULT_TENANT = "default"
"""The tenant of a server without auth, of a token file that holds one bare token, and of token-file lines that
name it: its worlds are saved at the data folder's top level, as before tenants existed."""
TENANT_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,64}")
"""A tenant name (it names a folder, like a world id)."""


@dataclass(frozen=True)
class Caller:
    """Who makes a call: ``tenant``, the namespace of worlds it sees, and its ``role``."""

    tenant: str
    role: Role


OPEN_CALLER = Caller(DEFAULT_TENANT, "read-write")
"""The caller of every call on a server without auth (and outside calls)."""

_CALLER: ContextVar[Caller] = ContextVar("worldweave_caller", default=OPEN_CALLER)


def caller() -> Caller:
    """The tenant and role of the call in progress, as ``BearerTokenInterceptor`` resolved its token;
    ``OPEN_CALLER`` without auth and outside calls."""
    return _CALLER.get()


def _metadata_digest(metadata_value: str | bytes) -> bytes:
    """SHA-256 of an ``authorization`` metadata value (``Bearer <token>``)."""
    return hashlib.sha256(metadata_value.encode() if isinstance(metadata_value, str) else metadata_value).digest()


def _checked_entry(token: str, who: Caller) -> str:
    """The ``authorization`` metadata value of ``token``, after checking the token (non-empty printable ASCII
    without spaces), the tenant (``TENANT_PATTERN``) and the role (``ROLES``); ``InvalidInputError`` naming the
    fault (never the token)."""
    try:
        (_, value), = call_metadata(token)  # the very metadata a client sends
    except ValueError as error:
        raise InvalidInputError(f"the auth token: {error}") from None
    if not TENANT_PATTERN.fullmatch(who.tenant):
        raise InvalidInputError(f"tenant {who.tenant!r} must be 1..64 characters from A-Z, a-z, 0-9, '_' and '-'")
    if who.role not in ROLES:
        raise InvalidInputError(f"unknown role {who.role!r}; roles are {' and '.join(ROLES)}")
    return value


class TokenTable:
    """Tokens and the ``Caller`` each one makes calls as. Holds only digests of the tokens' metadata values."""

    def __init__(self, callers: Mapping[str, Caller]) -> None:
        """``callers``: token -> caller. Each token must be non-empty printable ASCII without spaces, each tenant
        match ``TENANT_PATTERN`` and each role be one of ``ROLES`` (else ``InvalidInputError``)."""
        self._by_digest = {_metadata_digest(_checked_entry(token, who)): who for token, who in callers.items()}

    @classmethod
    def single(cls, token: str) -> TokenTable:
        """One token, read-write, in the default tenant (``--auth-token-file`` with a bare token,
        ``ServerConfig.auth_token``)."""
        return cls({token: OPEN_CALLER})

    def resolve(self, metadata_value: str | bytes) -> Caller | None:
        """The caller whose ``authorization`` metadata value this is; None for an unknown token."""
        return self._by_digest.get(_metadata_digest(metadata_value))

    @property
    def tenants(self) -> list[str]:
        """The tenants of the table's tokens, sorted."""
        return sorted({who.tenant for who in self._by_digest.values()})

    def __len__(self) -> int:
        return len(self._by_digest)


def read_token_file(path: Path) -> TokenTable:
    """The token table of an auth token file; ``InvalidInputError`` naming the file and line of the first fault.

    Each line is ``TOKEN TENANT ROLE``, separated by spaces or tabs; ``ROLE`` is ``read-write`` or ``read-only``.
    A field starting with ``#`` begins a comment (so a token cannot start with ``#``); blank lines are ignored. A
    file whose only line is a bare ``TOKEN`` (the form before tenants) is one read-write token of the default
    tenant. A token may appear once; a tenant may have several tokens, of either role.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as error:
        raise InvalidInputError(f"cannot read the auth token file {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise InvalidInputError(f"the auth token file {path} is not UTF-8 text (byte {error.start})") from None
    lines: list[tuple[int, list[str]]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        comment = next((i for i, field in enumerate(fields) if field.startswith("#")), len(fields))
        if comment:
            lines.append((number, fields[:comment]))
    if not lines:
        raise InvalidInputError(f"the auth token file {path} holds no token (lines are 'TOKEN TENANT ROLE')")
    if len(lines) == 1 and len(lines[0][1]) == 1:
        number, (token,) = lines[0]
        lines = [(number, [token, DEFAULT_TENANT, "read-write"])]
    callers: dict[str, Caller] = {}
    line_of: dict[str, int] = {}
    for number, fields in lines:
        where = f"{path}:{number}"
        if len(fields) != 3:
            raise InvalidInputError(f"{where}: expected 'TOKEN TENANT ROLE', got {len(fields)} field(s) (a bare "
                                    "token is allowed only as the file's one line)")
        token, tenant, role = fields
        if token in line_of:
            raise InvalidInputError(f"{where}: duplicate token, already on line {line_of[token]}")
        who = Caller(tenant, role)
        try:
            _checked_entry(token, who)
        except InvalidInputError as error:
            raise InvalidInputError(f"{where}: {error}") from None
        callers[token] = who
        line_of[token] = number
    return TokenTable(callers)


def read_only_may_call(method: str) -> bool:
    """Whether a read-only token may call ``method`` (``/package.Service/Method``)."""
    service, _, name = method.lstrip("/").partition("/")
    return service != WORLD_SERVICE or name in READ_ONLY_RPCS


def _handler_like(handler: grpc.RpcMethodHandler, behavior) -> grpc.RpcMethodHandler:
    """A handler of the same kind and (de)serializers as ``handler``, running ``behavior``."""
    kind = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }[(handler.request_streaming, handler.response_streaming)]
    return kind(behavior, request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer)


def _deny(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same kind as ``handler`` that answers ``code`` with ``message``."""

    async def deny(request_or_iterator, context: grpc.aio.ServicerContext) -> None:
        await context.abort(code, message)

    return _handler_like(handler, deny)


class BearerTokenInterceptor(grpc.aio.ServerInterceptor):
    """Admits calls carrying ``authorization: Bearer <token>`` of a token in ``tokens`` and runs each as the
    token's ``Caller``: no token or an unknown one is UNAUTHENTICATED; a read-only token calling an RPC outside
    ``READ_ONLY_RPCS`` is PERMISSION_DENIED. ``OPEN_METHODS`` need no token."""

    def __init__(self, tokens: TokenTable) -> None:
        if not len(tokens):
            raise InvalidInputError("the auth token table is empty: a server with auth needs at least one token")
        self._tokens = tokens

    async def intercept_service(self, continuation, handler_call_details: grpc.HandlerCallDetails):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method in OPEN_METHODS:
            return handler
        values = [v for k, v in handler_call_details.invocation_metadata or () if k == AUTHORIZATION_KEY]
        if not values:
            return _deny(handler, grpc.StatusCode.UNAUTHENTICATED, "this server needs a bearer token: pass token=... "
                         "to the client (metadata 'authorization: Bearer <token>')")
        who = self._tokens.resolve(values[0]) if len(values) == 1 else None
        if who is None:
            return _deny(handler, grpc.StatusCode.UNAUTHENTICATED,
                         "the bearer token is wrong (metadata 'authorization: Bearer <token>')")
        if who.role == "read-only" and not read_only_may_call(method):
            return _deny(handler, grpc.StatusCode.PERMISSION_DENIED,
                         f"this token's role is read-only: {method.rsplit('/', 1)[-1]} changes worlds and needs a "
                         f"read-write token (tenant {who.tenant!r})")
        return with_context(handler, lambda _context: _CALLER.set(who))


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
