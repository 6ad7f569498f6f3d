"""Requests whose bytes are not a protocol buffer of the method's type: INVALID_ARGUMENT.

gRPC's Python server answers a request it cannot parse with INTERNAL ("Exception
deserializing request!"), which tells a client the server is broken, when the
fault lies in what the client sent. The service's methods are registered here
with parsers that never raise: a malformed message becomes a marker, and the
call is refused with one sentence before the method sees it (for streams, when
the malformed message arrives).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc

from ..errors import InvalidInput


class _Malformed:
    """Stands for a message that could not be parsed."""

    __slots__ = ()


MALFORMED = _Malformed()


def add_servicer(add_to_server: Callable[[object, object], None], servicer, server) -> None:
    """Register ``servicer`` on ``server`` as the generated ``add_to_server`` would,
    with every method's request parser made lenient (see the module docstring)."""
    collected = _Collector()
    add_to_server(servicer, collected)
    handlers = {
        method: _lenient(handler, f"{collected.service}/{method}")
        for method, handler in collected.handlers.items()
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(collected.service, handlers),)
    )
    if hasattr(server, "add_registered_method_handlers"):
        server.add_registered_method_handlers(collected.service, handlers)


class _Collector:
    """Catches the handlers a generated ``add_*_to_server`` registers."""

    service = ""
    handlers: dict[str, grpc.RpcMethodHandler]

    def add_generic_rpc_handlers(self, generic: tuple) -> None:
        pass  # the same handlers come with add_registered_method_handlers

    def add_registered_method_handlers(self, service: str, handlers: dict) -> None:
        self.service, self.handlers = service, handlers


def _lenient(handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
    parse = _parser(handler.request_deserializer)
    refusal = f"the request to {method} is not a valid protocol buffer of its message type"
    serialize = handler.response_serializer
    if handler.unary_unary:
        behaviour = handler.unary_unary

        def unary_unary(request, context):
            _refuse_if_malformed(request, context, refusal)
            return behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(unary_unary, parse, serialize)
    if handler.unary_stream:
        stream_behaviour = handler.unary_stream

        def unary_stream(request, context):
            _refuse_if_malformed(request, context, refusal)
            yield from stream_behaviour(request, context)

        return grpc.unary_stream_rpc_method_handler(unary_stream, parse, serialize)
    if handler.stream_unary:
        upload_behaviour = handler.stream_unary

        def stream_unary(requests, context):
            return upload_behaviour(_checked(requests, refusal), context)

        return grpc.stream_unary_rpc_method_handler(stream_unary, parse, serialize)
    duplex_behaviour = handler.stream_stream

    def stream_stream(requests, context):
        yield from duplex_behaviour(_checked(requests, refusal), context)

    return grpc.stream_stream_rpc_method_handler(stream_stream, parse, serialize)


def _parser(deserializer: Callable[[bytes], object] | None) -> Callable[[bytes], object]:
    def parse(data: bytes) -> object:
        if deserializer is None:
            return data
        try:
            return deserializer(data)
        except Exception:  # protobuf's DecodeError, or whatever its C parser raises
            return MALFORMED

    return parse


def _refuse_if_malformed(request: object, context: grpc.ServicerContext, refusal: str) -> None:
    if request is MALFORMED:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal)


def _checked(requests: Iterator, refusal: str) -> Iterator:
    """The stream's messages; a malformed one raises InvalidInput inside the method,
    whose own error mapping (and clean-up of a half-received upload) then applies."""
    for request in requests:
        if request is MALFORMED:
            raise InvalidInput(refusal)
        yield request
