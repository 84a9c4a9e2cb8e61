"""``screwops events tail``: a topic's events as they arrive (or from its beginning).

Reads without a consumer group, so nothing is committed and no service's consumer group is
touched. Each event prints as one line (when it happened, its type, id and the main fields of its
payload), or with ``--json`` as its JSON, one event per line.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaConnectionError
from rich.text import Text
from screwops_contracts import DLQ_SUFFIX, all_topics
from screwops_errors import NotFoundError, UnavailableError
from screwops_settings import KafkaSettings, StackSettings, kafka_client_options

from screwops_cli.common import ExitCode, Json, calling, console, emit_line, errors, fail

app = typer.Typer(help="Events on the bus (Kafka).")

# Payload values longer than this are cut in the one-line view.
MAX_VALUE_CHARS = 60
# Payload fields shown per event in the one-line view.
MAX_FIELDS = 6
REASON_HEADER = "x-dlq-reason"


async def records(
    kafka: KafkaSettings, topic: str, *, from_beginning: bool
) -> AsyncGenerator[Any, None]:
    """The topic's records as they come (aiokafka's ``ConsumerRecord``), without end.

    Raises:
        NotFoundError: the topic does not exist on the broker.
        UnavailableError: the broker did not answer.
    """
    consumer = AIOKafkaConsumer(
        **kafka_client_options(kafka),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest" if from_beginning else "latest",
        client_id="screwops-events-tail",
    )
    try:
        await consumer.start()
    except KafkaConnectionError as exc:
        await consumer.stop()
        raise UnavailableError(f"Kafka did not answer at {kafka.bootstrap_servers}") from exc
    try:
        if topic not in await consumer.topics():
            raise NotFoundError(f"topic {topic!r} does not exist on the broker")
        consumer.subscribe([topic])
        async for record in consumer:
            yield record
    finally:
        await consumer.stop()


# Tests replace this to feed records from memory.
source: Callable[..., AsyncGenerator[Any, None]] = records


def known(topic: str) -> bool:
    """Whether ``topic`` is in the event catalogue (a topic or its dead-letter twin)."""
    return topic in all_topics()


def _catalogue() -> str:
    return ", ".join(t for t in all_topics() if not t.endswith(DLQ_SUFFIX))


@app.command()
def tail(
    topic: Annotated[
        str, typer.Argument(help="The topic, e.g. model.deployed or model.trained.dlq")
    ],
    from_beginning: Annotated[
        bool, typer.Option("--from-beginning", help="Start at the topic's oldest event.")
    ] = False,
    limit: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many events (default: Ctrl-C).")
    ] = None,
    as_json: Json = False,
) -> None:
    """Print a topic's events as they arrive, until --limit or Ctrl-C."""
    kafka = StackSettings().kafka

    async def run() -> None:
        seen = 0
        stream = source(kafka, topic, from_beginning=from_beginning)
        try:
            async for record in stream:
                _print(record, as_json)
                seen += 1
                if limit is not None and seen >= limit:
                    return
        finally:
            await stream.aclose()

    if not as_json:
        start = "its beginning" if from_beginning else "new events"
        errors.print(f"tailing {topic} from {start} (Ctrl-C stops)", style="dim")
    with calling("Kafka", kafka.bootstrap_servers):
        try:
            asyncio.run(run())
        except NotFoundError:
            if not known(topic):
                fail(
                    f"unknown topic {topic!r}; the catalogue's topics are: {_catalogue()} "
                    f"(each with a {DLQ_SUFFIX} twin)",
                    ExitCode.USAGE,
                )
            fail(
                f"topic {topic!r} does not exist on the broker (`make up` creates the "
                "catalogue's topics)",
                ExitCode.NOT_FOUND,
            )


def _print(record: Any, as_json: bool) -> None:
    raw: bytes = record.value or b""
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if as_json:
        if value is None:
            value = {
                "topic": record.topic,
                "partition": record.partition,
                "offset": record.offset,
                "unparsed": raw.decode(errors="replace"),
            }
        emit_line(value)
        return
    console.print(line(record, value), soft_wrap=True)


def line(record: Any, value: Any) -> Text:
    """One event as one line of text."""
    text = Text()
    if isinstance(value, dict) and "event_id" in value:
        text.append(str(value.get("occurred_at", "")), style="dim")
        text.append(f" {value.get('type', '?')}", style="bold")
        text.append(f" {value['event_id']}", style="cyan")
        payload = value.get("payload")
        text.append(" " + _fields(payload if isinstance(payload, dict) else {}))
    else:
        at = datetime.fromtimestamp(record.timestamp / 1000, UTC).isoformat()
        text.append(at, style="dim")
        text.append(f" {record.topic}@{record.partition}:{record.offset}", style="bold")
        if isinstance(value, dict):
            text.append(" " + _fields(value))
        else:
            shown = (record.value or b"")[:MAX_VALUE_CHARS].decode(errors="replace")
            text.append(f" not JSON: {shown!r}", style="red")
    headers = {name: bytes(v or b"").decode(errors="replace") for name, v in record.headers}
    if REASON_HEADER in headers:
        text.append(f"  dead-lettered: {headers[REASON_HEADER][:200]}", style="red")
    return text


def _fields(data: dict[str, Any]) -> str:
    shown = []
    for name, value in data.items():
        if isinstance(value, dict | list) or value is None:
            continue
        rendered = str(value)
        if len(rendered) > MAX_VALUE_CHARS:
            rendered = rendered[: MAX_VALUE_CHARS - 1] + "…"
        shown.append(f"{name}={rendered}")
        if len(shown) == MAX_FIELDS:
            break
    return " ".join(shown)
