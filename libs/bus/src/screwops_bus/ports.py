"""What a service needs of the bus to send events, as protocols it can be handed in tests.

:meth:`screwops_bus.Bus.emit` satisfies :class:`Emit` and :meth:`screwops_bus.Bus.publish`
satisfies :class:`Publish`; a unit test passes a fake that collects the events instead.
"""

from __future__ import annotations

from typing import Any, Protocol, TypeVar

from pydantic import BaseModel
from screwops_contracts import Event

P = TypeVar("P", bound=BaseModel)


class Emit(Protocol):
    """:meth:`screwops_bus.Bus.emit`: publish the event ``cause`` leads to, and wait for it."""

    async def __call__(
        self, event_type: type[Event[P]], payload: P, /, *, cause: Event[Any]
    ) -> None: ...


class Publish(Protocol):
    """:meth:`screwops_bus.Bus.publish`: publish an event that starts its own chain, and wait
    for the broker's acknowledgement."""

    async def __call__(self, event: Event[Any], /) -> None: ...


__all__ = ["Emit", "Publish"]
