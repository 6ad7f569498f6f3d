"""Building a gRPC method handler of the same shape as another (for interceptors)."""

from __future__ import annotations

from collections.abc import Callable

import grpc

_MAKERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def same_shape(handler: grpc.RpcMethodHandler, behaviour: Callable) -> grpc.RpcMethodHandler:
    """A handler running ``behaviour`` with ``handler``'s streaming shape and (de)serializers."""
    make = _MAKERS[(handler.request_streaming, handler.response_streaming)]
    return make(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


def behaviour_of(handler: grpc.RpcMethodHandler) -> Callable:
    """The function that serves ``handler``'s calls, whatever its shape."""
    return (
        handler.unary_unary or handler.unary_stream or handler.stream_unary or handler.stream_stream
    )
