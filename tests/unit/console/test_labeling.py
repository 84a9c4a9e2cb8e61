"""The labeling page: the next unlabeled image with good/bad, and the review queue."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

from fastapi.testclient import TestClient
from screwops.v1 import ingestion_pb2

from tests.unit.console.conftest import Console
from tests.unit.console.fakes import Fakes, closed_port, dataset_version

PAGE = "/labeling?dataset=screws"


def test_without_a_dataset_it_offers_the_ingested_datasets(console: TestClient) -> None:
    page = console.get("/labeling").text
    picked = page[page.index('<select name="dataset"') : page.index("</select>")]
    # A list to pick from, one entry per dataset with its newest version, nothing to type.
    assert re.search(
        r'<option value="screws">screws · v2, 20 images \(2 versions\)</option>', picked
    )
    assert re.search(r'<option value="" selected disabled>', picked)
    assert '<input name="dataset"' not in page
    assert "Choose a dataset to start." in page


def test_the_dataset_being_labeled_stays_picked(console: TestClient, fakes: Fakes) -> None:
    fakes.ingestion.versions.append(dataset_version("bolts", 1, 4))
    page = console.get(PAGE).text
    assert '<option value="screws" selected>' in page
    assert re.search(r'<option value="bolts">bolts · v1, 4 images</option>', page)
    # One ingestion does not list (yet) is still the one picked, not silently another.
    page = console.get("/labeling?dataset=nuts").text
    assert '<option value="nuts" selected>nuts · not listed by ingestion</option>' in page


def test_without_ingestion_the_dataset_can_still_be_typed(
    console: TestClient, fakes: Fakes
) -> None:
    fakes.ingestion.unavailable = True
    page = console.get(PAGE).text
    assert "ingestion: UNAVAILABLE" in page
    assert '<input name="dataset" id="dataset" value="screws" required' in page
    assert '<select name="dataset"' not in page


def test_it_shows_the_next_unlabeled_image_with_good_and_bad_buttons(
    console: TestClient, fakes: Fakes
) -> None:
    page = console.get(PAGE).text
    assert "screw-001.png" in page
    assert 'class="to-label" src="data:image/png;base64,' in page
    assert 'id="label-good"' in page
    assert 'id="label-bad"' in page
    assert "<kbd>1</kbd> good, <kbd>2</kbd> bad" in page
    assert '<span id="remaining">3</span> left' in page
    asked = fakes.labeling.next_requests[-1]
    assert (asked.dataset_id, asked.annotator) == ("screws", "ops")


def test_a_label_is_submitted_and_the_next_image_follows(console: TestClient, fakes: Fakes) -> None:
    task = fakes.labeling.tasks["screws"][0]
    answer = console.post(
        "/labeling/label",
        data={
            "image_sha256": task.image_sha256,
            "filename": task.filename,
            "dataset": "screws",
            "annotator": "mallory",
            "label": "good",
            "defect_type": "scratch_head",
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303
    target = urlsplit(answer.headers["location"])
    assert target.path == "/labeling"
    assert parse_qs(target.query)["notice"] == ["labeled screw-001.png good; 2 left to label"]
    [sent] = fakes.labeling.labels
    assert sent.image_sha256 == task.image_sha256
    assert (sent.dataset_id, sent.annotator, sent.label) == (
        "screws",
        "ops",  # the logged-in user, whatever the form says
        ingestion_pb2.LABEL_GOOD,
    )
    assert not sent.HasField("defect_type")  # only a bad screw has a defect type
    assert sent.labeled_at.seconds > 0
    sent_as = fakes.labeling.metadata[-1]
    assert (sent_as["x-screwops-on-behalf-of"], sent_as["x-screwops-on-behalf-of-role"]) == (
        "ops",
        "operator",
    )
    page = console.get(answer.headers["location"]).text
    assert "labeled screw-001.png good; 2 left to label" in page
    assert "screw-002.png" in page


def test_a_bad_label_carries_its_defect_type(console: TestClient, fakes: Fakes) -> None:
    task = fakes.labeling.tasks["screws"][1]
    console.post(
        "/labeling/label",
        data={
            "image_sha256": task.image_sha256,
            "dataset": "screws",
            "label": "bad",
            "defect_type": "thread_side",
        },
    )
    [sent] = fakes.labeling.labels
    assert (sent.label, sent.defect_type) == (ingestion_pb2.LABEL_BAD, "thread_side")


def test_when_everything_is_labeled_it_says_so(console: TestClient, fakes: Fakes) -> None:
    for task in fakes.labeling.tasks["screws"]:
        console.post(
            "/labeling/label",
            data={
                "image_sha256": task.image_sha256,
                "dataset": "screws",
                "label": "good",
            },
        )
    page = console.get(PAGE).text
    assert "Nothing left to label in screws" in page
    assert 'id="label-good"' not in page


def test_a_refused_label_shows_the_services_message(console: TestClient, fakes: Fakes) -> None:
    page = console.post(
        "/labeling/label",
        data={"image_sha256": "f" * 64, "dataset": "screws", "label": "bad"},
    ).text
    assert "labeling: NOT_FOUND: no image ffffffffffff" in page
    assert fakes.labeling.labels == []


def test_a_label_without_an_image_is_not_sent(console: TestClient, fakes: Fakes) -> None:
    page = console.post("/labeling/label", data={"dataset": "screws", "label": "good"}).text
    assert "a label needs an image, a dataset and a label" in page
    assert fakes.labeling.labels == []


def test_the_review_queue_is_listed_with_images_and_verdicts(
    console: TestClient, fakes: Fakes
) -> None:
    page = console.get(PAGE).text
    assert "(2 waiting)" in page
    assert 'id="review-insp-7"' in page
    assert 'id="review-insp-8"' in page
    assert "model: GOOD" in page
    assert "near threshold" in page
    assert "defect probability 0.480 (threshold 0.50)" in page
    assert "line-3/cam-a" in page
    asked = fakes.labeling.queue_requests[-1]
    assert asked.include_images
    assert asked.page_size == 12


def test_a_review_is_submitted_and_leaves_the_queue(console: TestClient, fakes: Fakes) -> None:
    answer = console.post(
        "/labeling/review",
        data={
            "inspection_id": "insp-7",
            "reviewer": "mallory",
            "label": "bad",
            "dataset": "screws",
        },
        follow_redirects=False,
    )
    assert answer.status_code == 303
    notice = parse_qs(urlsplit(answer.headers["location"]).query)["notice"]
    assert notice == ["review recorded: the model was wrong; 1 left in the queue"]
    [sent] = fakes.labeling.reviews
    assert (sent.inspection_id, sent.reviewer, sent.label) == (
        "insp-7",
        "ops",
        ingestion_pb2.LABEL_BAD,
    )
    page = console.get(answer.headers["location"]).text
    assert 'id="review-insp-7"' not in page
    assert "(1 waiting)" in page


def test_a_review_needs_an_inspection(console: TestClient, fakes: Fakes) -> None:
    page = console.post("/labeling/review", data={"label": "good"}).text
    assert "a review needs an inspection and a label" in page
    assert fakes.labeling.reviews == []


def test_an_unreachable_labeling_service_is_shown_per_section(make_console: Console) -> None:
    console = make_console(labeling_address=closed_port(), rpc_timeout_s=2.0)
    answer = console.get(PAGE)
    assert answer.status_code == 200
    assert answer.text.count("labeling: UNAVAILABLE") == 2  # the task and the queue
    assert '<option value="screws" selected>' in answer.text  # ingestion still answers


def test_a_viewer_sees_the_queue_but_neither_labels_nor_reviews(
    make_console: Console, fakes: Fakes
) -> None:
    console = make_console(user="vic")
    page = console.get(PAGE).text
    task = fakes.labeling.tasks["screws"][0]
    label = console.post(
        "/labeling/label",
        data={"image_sha256": task.image_sha256, "dataset": "screws", "label": "good"},
    )
    review = console.post("/labeling/review", data={"inspection_id": "insp-7", "label": "bad"})

    assert "Labeling needs the labeler role; you are viewer." in page
    assert "(2 waiting)" in page
    assert fakes.labeling.next_requests == []  # no image is reserved for a viewer
    assert (label.status_code, review.status_code) == (403, 403)
    assert "this needs the labeler role; vic is viewer" in label.text
    assert (fakes.labeling.labels, fakes.labeling.reviews) == ([], [])
