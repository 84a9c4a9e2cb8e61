"""Bearer-token authentication and role checks for every ScrewOps gRPC API, on both ends of the
channel.

Each API has a token table (:class:`~screwops_settings.ApiToken`): a token names a principal and
its role. A client presents ``authorization: Bearer <token>`` metadata; a call without one, or
with a token that is not in the table, ends UNAUTHENTICATED before the servicer runs. Each API
declares the least role each of its methods needs (:func:`method_roles`); a principal whose role
is below it gets PERMISSION_DENIED naming the role, and so does any method the table leaves out,
so a new method is closed until someone gives it a role. The servicer learns who is calling from
:func:`current_principal`, never from the request, so a caller cannot act under another name.

A principal whose token ``delegates`` (the console, which logs its own users in) may act on
behalf of one of its users: it sends the user's name and role in ``x-screwops-on-behalf-of`` and
``x-screwops-on-behalf-of-role`` metadata (:func:`on_behalf_of`), and the call is served as
``<user> (via <principal>)`` with the lesser of the two roles, so a user is recorded by name and
cannot do more than either allows. Any other principal sending these headers is refused
(PERMISSION_DENIED): naming someone else is a privilege of the token, not of the request.

Health checking and reflection stay open, so load balancers, probes and ``grpcurl`` work without
a token. Tokens are compared in constant time, against every configured token, so timing reveals
neither a token nor which one nearly matched; no refusal quotes the token presented.

Clients (the CLI, the console, the demo) open their channels with :func:`open_channel` or
:func:`open_aio_channel`, which add the token to every call, so no call site can forget it, and
connect with TLS (:mod:`screwops_rpc.tls`), so a token never crosses the network in the clear.
"""

from __future__ import annotations

import collections
import contextvars
import hmac
import inspect
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection
from screwops_settings import PRINCIPAL_PATTERN, ApiToken, GrpcTlsSettings, Role

from screwops_rpc.tls import channel_credentials

AUTHORIZATION = "authorization"
ON_BEHALF_OF = "x-screwops-on-behalf-of"
ON_BEHALF_OF_ROLE = "x-screwops-on-behalf-of-role"
_SCHEME = "bearer "
_OPEN_SERVICES = (
    health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
    reflection.SERVICE_NAME,
    "grpc.reflection.v1.ServerReflection",
)
_OPEN_PREFIXES = tuple(f"/{service}/" for service in _OPEN_SERVICES)
Balancing = Literal["pick_first", "round_robin"]
"""The client-side load-balancing policies a channel may use (:func:`channel_options`)."""
MISSING = "missing bearer token: send 'authorization: Bearer <token>' metadata"
INVALID = "invalid bearer token"

Req = TypeVar("Req")
Resp = TypeVar("Resp")


@dataclass(frozen=True)
class Principal:
    """Who an authenticated call acts as: the name its token maps to, and that name's role.

    A call made on behalf of a user is served as ``<user> (via <principal>)``: ``via`` names
    the delegating principal (empty for a principal acting for itself), ``user`` the user.
    """

    name: str
    role: Role
    delegates: bool = False
    via: str = ""
    user: str = ""


_CALLER: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "screwops_principal", default=None
)


def current_principal() -> Principal | None:
    """The principal the call being served authenticated as; None on an API without tokens
    (a development stack), where nobody is authenticated."""
    return _CALLER.get()


def method_roles(service: str, roles: Mapping[str, Role]) -> dict[str, Role]:
    """The role table of proto service ``service`` (its full name), from the least role each
    method (by its proto name) needs, keyed the way gRPC names the method of a call."""
    return {f"/{service}/{method}": role for method, role in roles.items()}


def bearer_auth(
    tokens: Sequence[ApiToken],
    roles: Mapping[str, Role],
    on_refused: Callable[[float], None] | None = None,
) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors a server needs for the token table ``tokens`` and the role table
    ``roles``: none when no token is configured (the settings refuse that in production), so a
    development stack stays open."""
    return [BearerAuth(tokens, roles, on_refused)] if tokens else []


class BearerAuth(grpc.aio.ServerInterceptor):
    """Refuses API calls without a configured bearer token or the method's role (see the module
    docstring), and serves the rest as their principal.

    ``on_refused`` is told how long each refused call took, for servers that count calls by
    status (the gateway's request metrics).
    """

    def __init__(
        self,
        tokens: Sequence[ApiToken],
        roles: Mapping[str, Role],
        on_refused: Callable[[float], None] | None = None,
    ) -> None:
        if not tokens:
            raise ValueError("BearerAuth needs at least one token")
        self._tokens = [
            (
                entry.token.get_secret_value().encode(),
                Principal(entry.principal, entry.role, delegates=entry.delegates),
            )
            for entry in tokens
        ]
        self._roles = dict(roles)
        self._on_refused = on_refused

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Req, Resp] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Req, Resp] | None:
        """Pass open calls on, and authorised ones as their principal; refuse the rest."""
        began = time.monotonic()
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        if handler is None or method.startswith(_OPEN_PREFIXES):
            return handler
        metadata = handler_call_details.invocation_metadata
        caller = self.authenticate(metadata)
        refusal: str | None
        if isinstance(caller, Principal):
            acting = _acting_for(caller, metadata)
            if isinstance(acting, str):
                refusal = acting
            else:
                refusal = self._forbidden(method, acting)
                if refusal is None:
                    return _acting_as(handler, acting)
            code = grpc.StatusCode.PERMISSION_DENIED
        else:
            code, refusal = grpc.StatusCode.UNAUTHENTICATED, caller
        if self._on_refused is not None:
            self._on_refused(time.monotonic() - began)
        return _refusing(handler, code, refusal)

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal | str:
        """The principal the call's metadata authenticates, or why it authenticates none."""
        presented = [value for key, value in metadata or () if key.lower() == AUTHORIZATION]
        if not presented:
            return MISSING
        value = presented[0]
        text = value.decode(errors="replace") if isinstance(value, bytes) else value
        if not text.lower().startswith(_SCHEME):
            return MISSING
        given = text[len(_SCHEME) :].strip().encode()
        found: Principal | None = None
        for token, principal in self._tokens:
            if hmac.compare_digest(token, given):
                found = principal
        return INVALID if found is None else found

    def _forbidden(self, method: str, caller: Principal) -> str | None:
        """Why ``caller`` may not call ``method``; None when it may."""
        name = method.rsplit("/", 1)[-1]
        needed = self._roles.get(method)
        if needed is None:
            return f"{name} is given to no role"
        if caller.role.allows(needed):
            return None
        return f"{name} needs the {needed} role; {caller.name} is {caller.role}"


def on_behalf_of(user: str, role: Role) -> tuple[tuple[str, str], ...]:
    """The metadata a delegating principal sends with a call it makes for ``user`` (whose role
    it vouches for); the server refuses it from a principal that does not delegate."""
    return ((ON_BEHALF_OF, user), (ON_BEHALF_OF_ROLE, role.value))


def _acting_for(
    caller: Principal, metadata: Sequence[tuple[str, str | bytes]] | None
) -> Principal | str:
    """Who the call acts as: ``caller``, or the user it names on its behalf when ``caller`` may
    delegate; why not, when it names one it may not."""
    named = {
        key.lower(): value.decode(errors="replace") if isinstance(value, bytes) else value
        for key, value in metadata or ()
        if key.lower() in (ON_BEHALF_OF, ON_BEHALF_OF_ROLE)
    }
    if not named:
        return caller
    if not caller.delegates:
        return f"{caller.name} may not act on behalf of another user"
    user = named.get(ON_BEHALF_OF, "")
    if not re.fullmatch(PRINCIPAL_PATTERN, user):
        return f"{caller.name} named no valid user to act on behalf of"
    try:
        claimed = Role(named.get(ON_BEHALF_OF_ROLE, ""))
    except ValueError:
        return f"{caller.name} named no valid role for {user}"
    role = claimed if caller.role.allows(claimed) else caller.role
    return Principal(f"{user} (via {caller.name})", role, via=caller.name, user=user)


def _acting_as(
    handler: grpc.RpcMethodHandler[Req, Resp], caller: Principal
) -> grpc.RpcMethodHandler[Req, Resp]:
    """``handler``, serving its call with ``caller`` as :func:`current_principal` (each call runs
    in a task of its own, so the principal of one never reaches another)."""
    behaviour: Any = (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        _CALLER.set(caller)
        return await behaviour(request, context)

    async def stream(
        request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[Any]:
        _CALLER.set(caller)
        answer = behaviour(request, context)
        if inspect.isasyncgen(answer):
            async for item in answer:
                yield item
        else:
            await answer

    return _same_kind(handler, stream if handler.response_streaming else unary)


def _refusing(
    handler: grpc.RpcMethodHandler[Req, Resp], code: grpc.StatusCode, reason: str
) -> grpc.RpcMethodHandler[Req, Resp]:
    """A handler of the same kind as ``handler`` that only refuses the call."""

    async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(code, reason)

    return _same_kind(handler, refuse)


def _same_kind(
    handler: grpc.RpcMethodHandler[Req, Resp], behaviour: Callable[..., Any]
) -> grpc.RpcMethodHandler[Req, Resp]:
    """A handler of the same kind and (de)serialisers as ``handler`` that runs ``behaviour``."""
    kinds = {
        (False, False): grpc.unary_unary_rpc_method_handler,
        (False, True): grpc.unary_stream_rpc_method_handler,
        (True, False): grpc.stream_unary_rpc_method_handler,
        (True, True): grpc.stream_stream_rpc_method_handler,
    }
    make = kinds[(handler.request_streaming, handler.response_streaming)]
    return make(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def _bearer(token: str) -> tuple[str, str]:
    return (AUTHORIZATION, f"Bearer {token}")


class _CallDetails(
    collections.namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class _SendToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, token: str) -> None:
        self._pair = _bearer(token)

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        return _CallDetails(
            details.method,
            details.timeout,
            [*(details.metadata or ()), self._pair],
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


class _AioToken:
    def __init__(self, token: str) -> None:
        self._pair = _bearer(token)

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*(details.metadata or ()), self._pair),
            details.credentials,
            details.wait_for_ready,
        )


# grpc.aio files an interceptor under the first kind of call it implements only, so each kind
# needs an object of its own.
class _AioUnaryUnary(_AioToken, grpc.aio.UnaryUnaryClientInterceptor):
    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioUnaryStream(_AioToken, grpc.aio.UnaryStreamClientInterceptor):
    async def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(self._details(details), request)


class _AioStreamUnary(_AioToken, grpc.aio.StreamUnaryClientInterceptor):
    async def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


class _AioStreamStream(_AioToken, grpc.aio.StreamStreamClientInterceptor):
    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(self._details(details), requests)


def open_channel(
    target: str,
    token: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
    *,
    balancing: Balancing = "pick_first",
    tls: GrpcTlsSettings | None = None,
) -> grpc.Channel:
    """A blocking TLS channel to ``target`` that presents ``token`` on every call (none when
    empty), so a command cannot forget the token on one of its calls; ``balancing`` as in
    :func:`channel_options`, ``tls`` as in :func:`~screwops_rpc.tls.channel_credentials`."""
    opened = grpc.secure_channel(
        target,
        channel_credentials(tls),
        options=_checked_name(target, channel_options(options, balancing)),
    )
    return grpc.intercept_channel(opened, _SendToken(token)) if token else opened


def open_aio_channel(
    target: str,
    token: str | None = None,
    options: Sequence[tuple[str, Any]] = (),
    *,
    balancing: Balancing = "pick_first",
    tls: GrpcTlsSettings | None = None,
) -> grpc.aio.Channel:
    """The asyncio twin of :func:`open_channel`."""
    kinds = (_AioUnaryUnary, _AioUnaryStream, _AioStreamUnary, _AioStreamStream)
    interceptors = [kind(token) for kind in kinds] if token else None
    return grpc.aio.secure_channel(
        target,
        channel_credentials(tls),
        options=_checked_name(target, channel_options(options, balancing)),
        interceptors=interceptors,
    )


def _checked_name(target: str, options: list[tuple[str, Any]]) -> list[tuple[str, Any]]:
    """``options``, with the first address as the authority of a static list of addresses
    (``ipv4:127.0.0.1:1,127.0.0.1:2``): gRPC would check the servers' certificate against the
    whole list, a name no certificate carries; every address of a list serves one API's."""
    scheme, _, addresses = target.partition(":")
    named = any(key == "grpc.default_authority" for key, _ in options)
    if scheme not in ("ipv4", "ipv6") or "," not in addresses or named:
        return options
    return [*options, ("grpc.default_authority", addresses.split(",", 1)[0])]


def channel_options(
    options: Sequence[tuple[str, Any]], balancing: Balancing
) -> list[tuple[str, Any]]:
    """``options`` with the load-balancing policy ``balancing``.

    ``pick_first`` (gRPC's own default) sends every call down one connection: right for one
    address, and for a Kubernetes ClusterIP Service, which balances connections, not calls.
    ``round_robin`` opens a connection to every address the name resolves to and spreads the
    calls over them: with a ``dns:///`` target naming a headless Service, each gateway pod gets
    its share, and pods added later once the name is resolved again (the server's
    ``max_connection_age`` makes that happen).
    """
    if balancing == "pick_first":
        return list(options)
    config: dict[str, Any] = {"loadBalancingConfig": [{balancing: {}}]}
    return [*options, ("grpc.service_config", json.dumps(config))]
