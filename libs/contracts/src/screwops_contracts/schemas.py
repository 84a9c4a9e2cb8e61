"""JSON Schemas of the events producers outside ScrewOps may publish, generated from the contracts.

``make schemas`` (``python -m screwops_contracts.schemas docs/schemas``) writes one file per topic
in ``UPSTREAM_TOPICS``: the whole message, envelope and payload, as the consumers validate it. A
unit test regenerates them and fails when the committed copies are stale, so docs/upstream.md never
describes a message the services would dead-letter.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from screwops_contracts.events import EVENTS_BY_TOPIC, UPSTREAM_TOPICS


def schema(topic: str) -> dict[str, Any]:
    """The JSON Schema of one message on ``topic``, with its ``$id`` the file's name.

    ``type`` and ``schema_version`` are plain fields of the envelope that the event's validator
    pins to the topic and to the version this consumer understands; the schema says so with
    ``const``, so a message valid against it is one the consumers accept.
    """
    event = EVENTS_BY_TOPIC[topic]
    document = event.model_json_schema()
    document["properties"]["type"]["const"] = topic
    document["properties"]["schema_version"]["const"] = event.SCHEMA_VERSION
    header = {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": f"{topic}.json"}
    return header | document


def render() -> dict[str, str]:
    """Each upstream topic's schema file: its name and its text, exactly as committed."""
    return {
        f"{topic}.json": json.dumps(schema(topic), indent=2, ensure_ascii=False) + "\n"
        for topic in UPSTREAM_TOPICS
    }


def write(directory: Path) -> None:
    """Write every schema file into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (directory / name).write_text(text)


if __name__ == "__main__":
    write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/schemas"))
