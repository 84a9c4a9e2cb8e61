"""A service's own bus on topics of the test's own, so it meets no other test's events.

Services subscribe and publish on the catalogue's topics; a test that runs a service's real
wiring in-process gives each of those topics a fresh stand-in (``routes``: catalogue topic ->
test topic), so events other tests (or the supervised services) put on the real topics never
reach it. :func:`service_bus` builds such a bus as the services' ``__main__`` do, and
:class:`RoutedReader` reads back what the services put on the routed topics.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer
from motor.motor_asyncio import AsyncIOMotorDatabase
from pydantic import BaseModel
from screwops_bus import Bus, RetryPolicy
from screwops_bus.bus import DEFAULT_MAX_POLL_INTERVAL_MS, Handler
from screwops_contracts import Event, dlq_topic
from screwops_settings import StackSettings, kafka_client_options

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


def service_bus(
    settings: StackSettings,
    service: str,
    db: AsyncIOMotorDatabase[Any],
    routes: dict[str, str],
    *,
    max_wait: float = 0.1,
) -> RoutedBus:
    """A service's bus as its ``__main__`` builds it, under a name of this test's own, on this
    test's topics and database, retrying transient failures quickly (3 attempts)."""
    return RoutedBus(
        settings,
        service=unique(service),
        db=db,
        retry=RetryPolicy(max_attempts=3, initial_wait=0.05, max_wait=max_wait),
        routes=routes,
    )


class RoutedReader:
    """Reads the events services put on this test's routed topics, from the first one on.

    ``events`` names the catalogue topics to read and the event each carries; a plain consumer
    with no group, so it takes nothing from the services' own consumers.
    """

    def __init__(
        self,
        settings: StackSettings,
        routes: dict[str, str],
        events: Mapping[str, type[Event[Any]]],
    ) -> None:
        self._events = {routes[topic]: event for topic, event in events.items()}
        self._consumer = AIOKafkaConsumer(
            *self._events,
            **kafka_client_options(settings.kafka),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )

    async def start(self) -> None:
        await self._consumer.start()

    async def stop(self) -> None:
        await self._consumer.stop()

    async def read(self) -> list[Event[Any]]:
        """The events that arrived since the last read (waiting up to half a second for some)."""
        batch = await self._consumer.getmany(timeout_ms=500)
        return [
            self._events[record.topic].model_validate_json(record.value)
            for records in batch.values()
            for record in records
        ]
