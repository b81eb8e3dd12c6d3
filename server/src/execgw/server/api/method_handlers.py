"""Rebuilding a gRPC method handler around its behavior, for server interceptors.

grpc.aio runs a coroutine behavior and awaits it, and iterates an async-generator
behavior; a wrapper must be of the same kind as what it wraps, or a servicer written
with `context.write` and one written with `yield` would break in different ways.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AbstractAsyncContextManager, AbstractContextManager
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc

Context = grpc.aio.ServicerContext[Any, Any]
Behavior = Callable[[Any, Context], Any]
# Given the request (or request iterator) and the context, an async context manager that
# holds whatever the call needs while it runs and gives the request the behavior gets.
Around = Callable[[Any, Context], AbstractAsyncContextManager[Any]]
# The same for a synchronous behavior, which grpc.aio runs on a worker thread.
AroundSync = Callable[[Any, Any], AbstractContextManager[Any]]
Deserializer = Callable[[bytes], Any] | None
if TYPE_CHECKING:
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
else:  # generic only in the type stubs
    Handler = grpc.RpcMethodHandler
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]]


def behavior_of(handler: Handler) -> Behavior:
    if handler.request_streaming and handler.response_streaming:
        behavior: object = handler.stream_stream
    elif handler.request_streaming:
        behavior = handler.stream_unary
    elif handler.response_streaming:
        behavior = handler.unary_stream
    else:
        behavior = handler.unary_unary
    # The stubs describe the synchronous server's behaviors; grpc.aio's take an aio context.
    return cast(Behavior, behavior)


class WrappedHandlers:
    """An interceptor's wrapped handler per method, built once rather than per call.

    grpc.aio asks every interceptor for every call. Innermost, the continuation returns
    the handler registered for the method, the same object each time, and so does an
    interceptor that answers from this cache; one that wraps per call (the auth
    interceptor: the caller's principal is part of its wrapper) makes those outside it
    wrap per call too, correctly, as the handler they are given differs."""

    def __init__(self) -> None:
        self._by_method: dict[str, tuple[Handler, Handler]] = {}

    def get(self, method: str, handler: Handler) -> Handler | None:
        found = self._by_method.get(method)
        return found[1] if found is not None and found[0] is handler else None

    def keep(self, method: str, handler: Handler, wrapped: Handler) -> Handler:
        # One entry per registered method: an unknown method has no handler to wrap.
        self._by_method[method] = (handler, wrapped)
        return wrapped


def wrap(
    handler: Handler,
    around: Around,
    *,
    request_deserializer: Deserializer,
    around_sync: AroundSync | None = None,
) -> Handler:
    """`handler` with its behavior run inside `around` (`around_sync` for a synchronous
    behavior); unchanged when there is no wrapper for the behavior's kind."""
    inner = behavior_of(handler)
    behavior = _wrapped(inner, around, around_sync)
    if behavior is None:
        return handler
    return rebuild(handler, behavior, request_deserializer=request_deserializer)


def rebuild(handler: Handler, behavior: Behavior, *, request_deserializer: Deserializer) -> Handler:
    """A handler of the same kind and serializer as `handler`, running `behavior`."""
    serializer = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(behavior, request_deserializer, serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(behavior, request_deserializer, serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(behavior, request_deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(behavior, request_deserializer, serializer)


def _wrapped(inner: Behavior, around: Around, around_sync: AroundSync | None) -> Behavior | None:
    if inspect.isasyncgenfunction(inner):

        async def generator(request: Any, context: Context) -> AsyncIterator[Any]:
            async with around(request, context) as prepared:
                async for response in inner(prepared, context):
                    yield response

        return generator
    if inspect.iscoroutinefunction(inner):

        async def coroutine(request: Any, context: Context) -> Any:
            async with around(request, context) as prepared:
                return await inner(prepared, context)

        return coroutine
    if around_sync is None:
        return None
    if inspect.isgeneratorfunction(inner):

        def generator_on_thread(request: Any, context: Any) -> Iterator[Any]:
            with around_sync(request, context) as prepared:
                yield from inner(prepared, context)

        return generator_on_thread

    def call_on_thread(request: Any, context: Any) -> Any:
        with around_sync(request, context) as prepared:
            return inner(prepared, context)

    return call_on_thread
