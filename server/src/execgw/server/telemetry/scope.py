"""The session a piece of work belongs to, carried in the OpenTelemetry context.

The context is what already travels with an order: the RPC's context is captured by
the core with each queued command and attached while the engine runs it, and asyncio
tasks copy it when they are created. So a value put here by the server interceptor (or
by the gateway around the tasks it starts) is seen by every span of that work, on the
writer's task too, without the order path passing anything along.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import MappingProxyType

from opentelemetry import context as otel_context
from opentelemetry.util.types import AttributeValue

from execgw.server.telemetry import attributes as attr

# Public for the gateway's tracer, which reads it from a context it already holds.
KEY = otel_context.create_key("execgw.telemetry.scope")


@dataclass(frozen=True, slots=True)
class Scope:
    """What every span and log line of this work says about where it ran."""

    session_id: str
    mode: str
    dry_run: bool
    # The span attributes above, made once: every span of the gateway gets them.
    attributes: Mapping[str, AttributeValue] = field(init=False, repr=False, compare=False)
    # The same, as the plain dict behind that read-only view, for the gateway's tracer
    # alone, which only copies it: dict.update takes a dict in one step, a mapping proxy
    # key by key (3x the cost, on every span). Never to be changed.
    stamp: dict[str, AttributeValue] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        found: dict[str, AttributeValue] = {attr.MODE: self.mode, attr.DRY_RUN: self.dry_run}
        if self.session_id:
            found[attr.SESSION_ID] = self.session_id
        object.__setattr__(self, "attributes", MappingProxyType(found))
        object.__setattr__(self, "stamp", found)

    def with_session(self, session_id: str) -> Scope:
        return self if session_id == self.session_id else Scope(session_id, self.mode, self.dry_run)


def current(context: otel_context.Context | None = None) -> Scope | None:
    """The scope of `context` (default: the current one); None outside any gateway work."""
    value = otel_context.get_value(KEY, context)
    return value if isinstance(value, Scope) else None


def current_session(context: otel_context.Context | None = None) -> str:
    found = current(context)
    return "" if found is None else found.session_id


def in_scope(scope: Scope, context: otel_context.Context | None = None) -> otel_context.Context:
    return otel_context.set_value(KEY, scope, context)


@contextmanager
def entered(scope: Scope) -> Iterator[None]:
    """Make `scope` current; tasks created inside keep it for their whole life."""
    token = otel_context.attach(in_scope(scope))
    try:
        yield
    finally:
        otel_context.detach(token)
