"""Bearer-token check on every call.

The standard health checks are exempt: orchestrators' gRPC probes (Kubernetes
among them) cannot send headers, and health reveals nothing about slides.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable

import grpc

from .handlers import same_shape

EXEMPT_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


class TokenInterceptor(grpc.ServerInterceptor):
    """Refuses calls whose ``authorization`` metadata is not ``Bearer <token>``."""

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = continuation(details)
        if handler is None or details.method in EXEMPT_METHODS:
            return handler
        sent = dict(details.invocation_metadata or ()).get("authorization")
        if sent is None:
            return _refusal(handler, "this server needs a bearer token; pass --token-file")
        if not hmac.compare_digest(str(sent).encode(), self._expected):
            return _refusal(handler, "the bearer token was not accepted")
        return handler


def _refusal(handler: grpc.RpcMethodHandler, message: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape as ``handler`` that aborts with UNAUTHENTICATED."""

    def abort(request: object, context: grpc.ServicerContext) -> None:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    def abort_stream(request: object, context: grpc.ServicerContext):
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover  (makes this a generator, as streaming handlers are)

    behaviour = abort_stream if handler.response_streaming else abort
    return same_shape(handler, behaviour)
