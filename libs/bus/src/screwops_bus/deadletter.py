"""Dead letters: what a message that could not be processed carries to ``<topic>.dlq``.

The dead letter keeps the original key, value and headers byte for byte, so ``dlq replay`` can
put the very same message back on its topic, and adds ``x-dlq-*`` headers saying why, where from
and when. Nothing is dropped silently: a message is either processed or dead-lettered.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

PREFIX = "x-dlq-"
REASON = f"{PREFIX}reason"
ERROR_TYPE = f"{PREFIX}error-type"
CONSUMER = f"{PREFIX}consumer"
TOPIC = f"{PREFIX}original-topic"
PARTITION = f"{PREFIX}original-partition"
OFFSET = f"{PREFIX}original-offset"
FAILED_AT = f"{PREFIX}failed-at"
ATTEMPTS = f"{PREFIX}attempts"

# Kafka headers are small; a reason is a sentence plus the error, never a whole traceback.
MAX_REASON_CHARS = 2000


@dataclass(frozen=True)
class DeadLetter:
    """Why and where a message failed; rendered into (and parsed back from) Kafka headers."""

    reason: str
    error_type: str
    consumer: str
    topic: str
    partition: int
    offset: int
    attempts: int
    failed_at: datetime

    def headers(self, original: dict[str, str]) -> dict[str, str]:
        """The original headers plus this dead letter's, without stale ``x-dlq-*`` ones."""
        kept = {k: v for k, v in original.items() if not k.startswith(PREFIX)}
        return kept | {
            REASON: self.reason[:MAX_REASON_CHARS],
            ERROR_TYPE: self.error_type,
            CONSUMER: self.consumer,
            TOPIC: self.topic,
            PARTITION: str(self.partition),
            OFFSET: str(self.offset),
            ATTEMPTS: str(self.attempts),
            FAILED_AT: self.failed_at.isoformat(),
        }

    @classmethod
    def from_headers(cls, headers: dict[str, str]) -> DeadLetter:
        """Read a dead letter back (for ``dlq list`` and ``dlq replay``)."""
        return cls(
            reason=headers[REASON],
            error_type=headers[ERROR_TYPE],
            consumer=headers[CONSUMER],
            topic=headers[TOPIC],
            partition=int(headers[PARTITION]),
            offset=int(headers[OFFSET]),
            attempts=int(headers[ATTEMPTS]),
            failed_at=datetime.fromisoformat(headers[FAILED_AT]).astimezone(UTC),
        )


def original_headers(headers: dict[str, str]) -> dict[str, str]:
    """The headers a replayed message gets: the dead letter's own removed."""
    return {k: v for k, v in headers.items() if not k.startswith(PREFIX)}
