"""The committed AsyncAPI document is what FastStream generates from the contracts today."""

from __future__ import annotations

from pathlib import Path

import yaml
from screwops_contracts import CATALOGUE
from screwops_contracts.asyncapi import render

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"


def test_the_committed_document_is_fresh() -> None:
    assert DOCUMENT.read_text() == render(), "docs/asyncapi.yaml is stale: run `make asyncapi`"


def test_the_document_has_a_channel_for_each_producer_and_consumer() -> None:
    channels = yaml.safe_load(render())["channels"]
    expected = {
        f"{who}:{route.event.TOPIC}"
        for route in CATALOGUE
        for who in (route.producer, *route.consumers)
    }
    assert set(channels) == expected
    assert all(c["address"] == name.split(":", 1)[1] for name, c in channels.items())
