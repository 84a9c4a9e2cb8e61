"""The inspection page: uploads go through the gateway's Inspect, the grid shows each verdict."""

from __future__ import annotations

import re

from fastapi.testclient import TestClient

from tests.unit.console.conftest import Console
from tests.unit.console.fakes import Fakes, closed_port, png


def upload(console: TestClient, *files: tuple[str, bytes], threshold: float = 0.5) -> str:
    answer = console.post(
        "/inspection",
        files=[("images", (name, data, "image/png")) for name, data in files],
        data={"threshold": str(threshold)},
    )
    assert answer.status_code == 200, answer.text
    page: str = answer.text
    return page


def cards(page: str) -> list[tuple[str, str]]:
    """(class, verdict) of each result card, in order."""
    found = re.findall(
        r'<figure class="card (\w+)".*?<span class="verdict">(\w+)</span>', page, re.S
    )
    return [(kind, verdict) for kind, verdict in found]


def test_the_form_has_a_multi_file_input_and_a_threshold_slider(console: TestClient) -> None:
    page = console.get("/inspection").text
    assert 'type="file"' in page
    assert "multiple" in page
    assert 'type="range" id="threshold"' in page
    assert 'id="results"' not in page


def test_each_image_is_inspected_and_shown_with_its_verdict_and_score(
    console: TestClient, fakes: Fakes
) -> None:
    page = upload(console, ("dark.png", png(30)), ("light.png", png(200)), ("mid.png", png(140)))
    assert cards(page) == [("good", "Good"), ("bad", "Bad"), ("bad", "Bad")]
    assert "defect probability 0.118" in page
    assert "defect probability 0.784" in page
    assert "dark.png" in page
    assert "light.png" in page
    assert 'data-probability="0.78' in page  # what the slider re-classifies by
    assert re.search(r'id="good-count">1<', page)
    assert re.search(r'id="bad-count">2<', page)
    assert "gateway: DEFECT at 0.50 · screw-classifier v3" in page
    assert 'src="data:image/png;base64,' in page  # thumbnails, not links to elsewhere
    assert len(fakes.gateway.requests) == 3
    sent = fakes.gateway.requests[0]
    assert (sent.line_id, sent.camera_id) == ("console", "upload")
    assert sent.request_id.startswith("console-")
    assert not sent.HasField("model_version")  # the production version decides


def test_the_threshold_reclassifies_by_the_returned_probability(console: TestClient) -> None:
    page = upload(console, ("dark.png", png(30)), ("light.png", png(200)), threshold=0.9)
    assert cards(page) == [("good", "Good"), ("good", "Good")]
    assert 'value="0.9"' in page
    page = upload(console, ("dark.png", png(30)), threshold=0.1)
    assert cards(page) == [("bad", "Bad")]


def test_a_refused_file_is_reported_on_its_card_and_the_others_still_go(
    console: TestClient,
) -> None:
    page = upload(console, ("notes.png", b"not an image"), ("light.png", png(200)))
    assert '<figure class="card failed">' in page
    assert "image: not a PNG or JPEG" in page
    assert ("bad", "Bad") in cards(page)
    assert "1 of 2 images failed" in page


def test_no_file_or_too_many_files_are_refused(make_console: Console) -> None:
    console = make_console(max_images=2)
    answer = console.post("/inspection", data={"threshold": "0.5"})
    assert answer.status_code == 400
    assert "choose one or more images" in answer.text
    answer = console.post(
        "/inspection",
        files=[("images", (f"{n}.png", png(10), "image/png")) for n in range(3)],
    )
    assert answer.status_code == 400
    assert "at most 2 images at once (3 chosen)" in answer.text


def test_an_oversized_image_is_refused_without_calling_the_gateway(
    make_console: Console, fakes: Fakes
) -> None:
    console = make_console(max_image_bytes=100)
    page = upload(console, ("big.png", png(10, size=256)))
    assert "larger than 100 bytes" in page
    assert fakes.gateway.requests == []


def test_the_gateway_token_is_sent_as_a_bearer_token(make_console: Console, fakes: Fakes) -> None:
    fakes.gateway.token = "line-token-0123456789"
    refused = upload(make_console(), ("a.png", png(10)))
    assert "gateway: UNAUTHENTICATED: missing bearer token" in refused
    page = upload(make_console(gateway_token="line-token-0123456789"), ("a.png", png(10)))
    assert cards(page) == [("good", "Good")]
    assert fakes.gateway.metadata[-1]["authorization"] == "Bearer line-token-0123456789"


def test_an_unreachable_gateway_is_reported_on_every_card(make_console: Console) -> None:
    page = upload(
        make_console(gateway_address=closed_port(), rpc_timeout_s=2.0), ("a.png", png(10))
    )
    assert "gateway: UNAVAILABLE" in page
    assert "1 of 1 images failed" in page
