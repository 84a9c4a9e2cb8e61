"""A service's own bus on topics of the test's own, so it meets no other test's events.

Services subscribe and publish on the catalogue's topics; a test that runs a service's real
wiring in-process gives each of those topics a fresh stand-in (``routes``: catalogue topic ->
test topic), so events other tests (or the supervised services) put on the real topics never
reach it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

from pydantic import BaseModel
from screwops_bus import Bus
from screwops_bus.bus import DEFAULT_MAX_POLL_INTERVAL_MS, Handler
from screwops_contracts import Event, dlq_topic
from screwops_settings import StackSettings

from tests.integration.conftest import _topics
from tests.support import unique

M = TypeVar("M", bound=BaseModel)


class RoutedBus(Bus):
    """A :class:`Bus` whose catalogue topics are replaced by ``routes``."""

    def __init__(self, *args: Any, routes: dict[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.routes = routes

    def consumer(
        self,
        model: type[M],
        *,
        group: str | None = None,
        topic: str | None = None,
        identity: Callable[[M], str] | None = None,
        max_poll_interval_ms: int = DEFAULT_MAX_POLL_INTERVAL_MS,
    ) -> Callable[[Handler[M]], Handler[M]]:
        routed = topic or self.routes[getattr(model, "TOPIC")]  # noqa: B009 (M is any model)
        return super().consumer(
            model,
            group=group,
            topic=routed,
            identity=identity,
            max_poll_interval_ms=max_poll_interval_ms,
        )

    async def publish(self, event: Event[Any], *, topic: str | None = None) -> None:
        await super().publish(event, topic=topic or self.routes[event.TOPIC])


async def routed_topics(
    settings: StackSettings, topics: Iterable[str], prefix: str
) -> AsyncIterator[dict[str, str]]:
    """Create a stand-in (and its dead-letter twin) for each topic; yield the routes."""
    routes = {str(topic): unique(prefix) for topic in topics}
    names = [n for topic in routes.values() for n in (topic, dlq_topic(topic))]
    async for _ in _topics(settings, *names):
        yield routes
