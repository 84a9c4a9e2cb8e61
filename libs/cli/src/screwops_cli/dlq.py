"""``screwops dlq``: the dead letters of the bus, and replaying them.

A consumer that cannot process a message (malformed, failing permanently, or still failing after
its retries) puts it on ``<topic>.dlq`` with ``x-dlq-*`` headers saying why, and moves on.
``dlq list`` shows those records; ``dlq replay`` puts the original messages back on their topic
(:mod:`screwops_bus.replay`), for instance once the cause is fixed. A message too large for its
dead letter has its body in MinIO (``minio.dead_letter_bucket``) and the record points to it:
``dlq list`` shows where, and ``dlq replay`` reads it back and checks its sha256.

Replaying is safe for events that were in fact processed: the message reaches every consumer
group of the topic again, but each skips an ``event_id`` it already processed, so only the groups
that failed it act on it. A message that fails again is dead-lettered again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer
from rich.table import Table
from screwops_contracts import DLQ_SUFFIX, all_topics, dlq_topic
from screwops_errors import NotFoundError
from screwops_settings import KafkaSettings, StackSettings

from screwops_cli.common import ExitCode, Json, calling, console, emit, fail

if TYPE_CHECKING:
    from screwops_bus.replay import DeadLetterRecord, Replayed

app = typer.Typer(help="Dead letters: list them, replay them onto their topic.")

MAX_REASON_CHARS = 120


async def read_letters(
    kafka: KafkaSettings, topics: Sequence[str], newest: int | None
) -> list[DeadLetterRecord]:
    """The dead letters of ``topics`` (the bus library is imported only when needed)."""
    from screwops_bus.replay import read_dead_letters

    return await read_dead_letters(kafka, topics, newest=newest)


async def replay_letters(
    settings: StackSettings, topic: str, event_ids: Sequence[str] | None
) -> list[Replayed]:
    """Replay DLQ ``topic`` (all of it, or the messages of ``event_ids``), bodies kept in MinIO
    read back from there."""
    from screwops_bus.replay import replay_dead_letters
    from screwops_storage import ObjectStore

    return await replay_dead_letters(
        settings.kafka,
        topic,
        event_ids=event_ids,
        bodies=ObjectStore.from_settings(settings.minio),
        max_request_bytes=settings.kafka.max_request_bytes,
    )


def dlq_name(topic: str) -> str:
    """``topic``'s dead-letter topic; a DLQ's name is kept as it is."""
    return topic if topic.endswith(DLQ_SUFFIX) else dlq_topic(topic)


def _catalogue_dlqs() -> list[str]:
    return [t for t in all_topics() if t.endswith(DLQ_SUFFIX)]


def _not_found(topic: str, exc: NotFoundError) -> NoReturn:
    """Exit for a missing topic (a usage error outside the catalogue) or missing events."""
    from screwops_bus.replay import UnknownTopicError

    if isinstance(exc, UnknownTopicError) and topic not in all_topics():
        fail(
            f"unknown dead-letter topic {topic!r}; the catalogue's are: "
            + ", ".join(_catalogue_dlqs()),
            ExitCode.USAGE,
        )
    fail(str(exc), ExitCode.NOT_FOUND)


@app.command("list")
def list_letters(
    topic: Annotated[
        str | None,
        typer.Argument(
            help="A topic or its DLQ (default: every DLQ of the catalogue).", show_default=False
        ),
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="The newest records per DLQ.")] = 50,
    as_json: Json = False,
) -> None:
    """Dead letters, oldest first, with why and where each message failed."""
    kafka = StackSettings().kafka
    topics = [dlq_name(topic)] if topic else _catalogue_dlqs()
    with calling("Kafka", kafka.bootstrap_servers):
        try:
            letters = asyncio.run(read_letters(kafka, topics, limit))
        except NotFoundError as exc:
            _not_found(topics[0], exc)
    if as_json:
        emit([_letter_dict(letter) for letter in letters])
        return
    table = Table(title="dead letters")
    for column in ("topic", "at", "failed", "consumer", "event", "reason"):
        table.add_column(column)
    for letter in letters:
        dead = letter.letter
        reason = dead.reason if dead else "(no x-dlq-* headers)"
        table.add_row(
            letter.original_topic,
            f"{letter.partition}:{letter.offset}",
            dead.failed_at.isoformat(timespec="seconds") if dead else "",
            dead.consumer if dead else "",
            letter.event_id or "(no event_id)",
            reason if len(reason) <= MAX_REASON_CHARS else reason[: MAX_REASON_CHARS - 1] + "…",
        )
    console.print(table)
    where = topics[0] if topic else f"{len(topics)} dead-letter topics"
    console.print(f"{len(letters)} dead letters in {where}")


@app.command()
def replay(
    topic: Annotated[str, typer.Argument(help="The DLQ (e.g. dataset.ingested.dlq) or its topic.")],
    event_id: Annotated[
        list[str] | None,
        typer.Option(
            "--event-id",
            help="Replay this event (repeatable); a message without an event_id is named by "
            "the identity `dlq list --json` shows.",
            show_default=False,
        ),
    ] = None,
    replay_all: Annotated[
        bool, typer.Option("--all", help="Replay every message of the DLQ.")
    ] = False,
    as_json: Json = False,
) -> None:
    """Put dead-lettered messages back on their topic, as they were first published."""
    if bool(event_id) == replay_all:
        fail("name the messages to replay: --event-id ID (repeatable) or --all", ExitCode.USAGE)
    settings = StackSettings()
    servers = settings.kafka.bootstrap_servers
    dlq = dlq_name(topic)
    with calling("Kafka", servers):
        try:
            done = asyncio.run(replay_letters(settings, dlq, None if replay_all else event_id))
        except NotFoundError as exc:
            _not_found(dlq, exc)
    if as_json:
        emit(
            [
                {
                    "event_id": r.letter.event_id,
                    "identity": r.letter.identity,
                    "from": f"{r.letter.topic}@{r.letter.partition}:{r.letter.offset}",
                    "topic": r.topic,
                    "partition": r.partition,
                    "offset": r.offset,
                }
                for r in done
            ]
        )
        return
    if not done:
        console.print(f"nothing to replay: {dlq} is empty")
        return
    table = Table(title=f"replayed from {dlq}")
    for column in ("event", "dead letter", "now at"):
        table.add_column(column)
    for r in done:
        table.add_row(
            r.letter.event_id or r.letter.identity,
            f"{r.letter.partition}:{r.letter.offset}",
            f"{r.topic}@{r.partition}:{r.offset}",
        )
    console.print(table)
    console.print(
        f"replayed {len(done)} message(s); consumers that already processed an event skip it"
    )


def _letter_dict(letter: DeadLetterRecord) -> dict[str, Any]:
    dead = letter.letter
    try:
        stored = letter.stored_body
    except ValueError:
        stored = None
    return {
        "dlq_topic": letter.topic,
        "partition": letter.partition,
        "offset": letter.offset,
        "timestamp": letter.timestamp.isoformat(),
        "original_topic": letter.original_topic,
        "event_id": letter.event_id,
        "identity": letter.identity,
        "key": letter.key.decode(errors="replace") if letter.key is not None else None,
        "value": letter.value.decode(errors="replace"),
        "stored_body": stored.ref if stored else None,
        "headers": letter.header_map,
        "reason": dead.reason if dead else None,
        "error_type": dead.error_type if dead else None,
        "consumer": dead.consumer if dead else None,
        "original_partition": dead.partition if dead else None,
        "original_offset": dead.offset if dead else None,
        "attempts": dead.attempts if dead else None,
        "failed_at": dead.failed_at.isoformat() if dead else None,
    }
