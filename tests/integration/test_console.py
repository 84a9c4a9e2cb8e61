"""The console in a real browser: Debian's headless Chromium driven by selenium.

The console runs in-process under uvicorn (as ``python -m screwops_console`` runs it) against the
fake servicers of its unit tests, served over real gRPC: the page flows, forms, the script and the
redirects are the real ones, without a trained model behind the gateway. Each flow is checked on
the page and at the fake service that received the call, and leaves a screenshot (under the
test's tmp dir) that must not be blank.

Chromium and chromedriver come from Debian (``deploy/local/install.sh browser``, part of
``make setup``); selenium is given both paths, so it never downloads a driver.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from opentelemetry.sdk.metrics import MeterProvider
from PIL import Image
from screwops.v1 import ingestion_pb2
from screwops_console.web import create_app
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.unit.console.conftest import password, settings_for
from tests.unit.console.fakes import Fakes, png, populated, serving

WAIT_S = 20.0
MIN_COLOURS = 16
"""A screenshot with fewer distinct colours than this is taken as blank (a page that failed to
render is one or two colours; these pages have images, charts and text)."""


@dataclass
class Console:
    url: str
    fakes: Fakes


@pytest.fixture
def console() -> Iterator[Console]:
    """The console on a free port of 127.0.0.1, its services faked."""
    fakes = populated()
    with serving(fakes) as address:
        app = create_app(
            settings_for(address), fakes.runs, fakes.reports, meter_provider=MeterProvider()
        )
        server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
        )
        thread = threading.Thread(target=server.run, name="console", daemon=True)
        thread.start()
        deadline = time.monotonic() + WAIT_S
        while not server.started:
            assert thread.is_alive(), "the console did not start"
            assert time.monotonic() < deadline, "the console did not start in time"
            time.sleep(0.05)
        port = server.servers[0].sockets[0].getsockname()[1]
        try:
            yield Console(f"http://127.0.0.1:{port}", fakes)
        finally:
            server.should_exit = True
            thread.join(timeout=WAIT_S)


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    chromium = shutil.which("chromium")
    driver_path = shutil.which("chromedriver")
    if chromium is None or driver_path is None:
        pytest.fail(
            "Debian's chromium and chromium-driver are needed: deploy/local/install.sh browser"
        )
    os.environ.setdefault("SE_OFFLINE", "true")  # never let selenium look for drivers online
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in (
        "--headless=new",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,1100",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=driver_path))
    try:
        yield driver
    finally:
        driver.quit()


def wait(browser: WebDriver) -> WebDriverWait[WebDriver]:
    # A form post replaces the page: an element found just before may be gone when read.
    return WebDriverWait(
        browser, WAIT_S, ignored_exceptions=(NoSuchElementException, StaleElementReferenceException)
    )


def screenshot(browser: WebDriver, path: Path) -> Path:
    """Save a full-window PNG and check it is not blank."""
    browser.save_screenshot(str(path))
    with Image.open(path) as image:
        rgb = image.convert("RGB")
        colours = rgb.getcolors(maxcolors=1 << 20)
        width, height = rgb.size
    assert width > 0
    assert height > 0
    assert colours is not None
    assert len(colours) >= MIN_COLOURS, f"{path} looks blank: {len(colours)} colours"
    assert max(count for count, _ in colours) < 0.97 * width * height, f"{path} is one colour"
    return path


def await_notice(browser: WebDriver, expected: str) -> None:
    """Wait until the page (after a form post and its redirect) shows ``expected``."""
    wait(browser).until(lambda b: expected in b.find_element(By.CSS_SELECTOR, ".flash.notice").text)
    loaded(browser)


def loaded(browser: WebDriver) -> None:
    """Wait until the page's script has run (its key and slider handlers are in place)."""
    wait(browser).until(lambda b: b.execute_script("return document.readyState") == "complete")


def log_in(browser: WebDriver, console: Console, name: str = "ops") -> None:
    """Log in through the login page, as a person would."""
    browser.get(f"{console.url}/login")
    browser.find_element(By.ID, "name").send_keys(name)
    browser.find_element(By.ID, "password").send_keys(password(name))
    browser.find_element(By.ID, "log-in").click()
    wait(browser).until(lambda b: f"{name} (" in b.find_element(By.ID, "account").text)


def test_inspection_uploads_images_and_shows_the_grid(
    browser: WebDriver, console: Console, tmp_path: Path
) -> None:
    files = []
    for name, gray in (("dark.png", 30), ("light.png", 200), ("mid.png", 140)):
        path = tmp_path / name
        path.write_bytes(png(gray, size=128))
        files.append(str(path))
    log_in(browser, console)
    browser.get(f"{console.url}/inspection")
    browser.find_element(By.ID, "images").send_keys("\n".join(files))
    browser.find_element(By.ID, "inspect").click()
    wait(browser).until(expected_conditions.presence_of_element_located((By.ID, "results")))
    loaded(browser)

    cards = browser.find_elements(By.CSS_SELECTOR, "#results .card")
    verdicts = [card.find_element(By.CLASS_NAME, "verdict").text for card in cards]
    assert verdicts == ["Good", "Bad", "Bad"]
    assert browser.find_element(By.ID, "bad-count").text == "2"
    assert len(console.fakes.gateway.requests) == 3
    screenshot(browser, tmp_path / "inspection.png")

    # The slider re-classifies in the page, without another call to the gateway.
    slider = browser.find_element(By.ID, "threshold")
    slider.send_keys(Keys.END)
    wait(browser).until(lambda b: b.find_element(By.ID, "bad-count").text == "0")
    verdicts = [card.find_element(By.CLASS_NAME, "verdict").text for card in cards]
    assert verdicts == ["Good", "Good", "Good"]
    assert browser.find_element(By.ID, "threshold-value").text == "1.00"
    slider.send_keys(Keys.HOME)
    wait(browser).until(lambda b: b.find_element(By.ID, "bad-count").text == "3")
    assert len(console.fakes.gateway.requests) == 3
    screenshot(browser, tmp_path / "inspection-threshold-0.png")


def test_labeling_takes_key_1_for_good_and_2_for_bad(
    browser: WebDriver, console: Console, tmp_path: Path
) -> None:
    log_in(browser, console, "lab")
    browser.get(f"{console.url}/labeling?dataset=screws")
    loaded(browser)
    image = browser.find_element(By.CSS_SELECTOR, "img.to-label")
    assert browser.execute_script("return arguments[0].naturalWidth", image) > 0
    screenshot(browser, tmp_path / "labeling.png")

    ActionChains(browser).send_keys("1").perform()
    await_notice(browser, "labeled screw-001.png good; 2 left to label")
    [label] = console.fakes.labeling.labels
    assert (label.dataset_id, label.annotator) == ("screws", "lab")
    assert label.label == ingestion_pb2.LABEL_GOOD
    assert "screw-002.png" in browser.find_element(By.ID, "label-form").text

    ActionChains(browser).send_keys("2").perform()
    await_notice(browser, "labeled screw-002.png bad; 1 left to label")
    assert [label.label for label in console.fakes.labeling.labels] == [
        ingestion_pb2.LABEL_GOOD,
        ingestion_pb2.LABEL_BAD,
    ]
    screenshot(browser, tmp_path / "labeling-after.png")

    # The review queue, under the image: a reviewer's verdict leaves it.
    item = browser.find_element(By.ID, "review-insp-7")
    item.find_element(By.CSS_SELECTOR, "button.bad").click()
    await_notice(browser, "review recorded: the model was wrong")
    assert [review.inspection_id for review in console.fakes.labeling.reviews] == ["insp-7"]
    assert not browser.find_elements(By.ID, "review-insp-7")


def test_pipeline_rolls_back_from_the_page(
    browser: WebDriver, console: Console, tmp_path: Path
) -> None:
    log_in(browser, console)
    browser.get(f"{console.url}/pipeline")
    assert browser.find_element(By.ID, "production-version").text == "v2"
    charts = browser.find_elements(By.CSS_SELECTOR, "#runs svg.chart")
    assert len(charts) == 4
    assert all(chart.size["width"] > 100 for chart in charts)
    screenshot(browser, tmp_path / "pipeline.png")

    form = browser.find_element(By.ID, "rollback-form")
    form.find_element(By.NAME, "reason").send_keys("false rejects on line 3")
    browser.find_element(By.ID, "rollback").click()
    await_notice(browser, "rolled back: production v2 → v1 (by ops: false rejects on line 3)")
    assert console.fakes.registry.production == 1
    assert browser.find_element(By.ID, "production-version").text == "v1"
    [rollback] = [
        r for r in console.fakes.registry.requests if r.DESCRIPTOR.name == "RollbackRequest"
    ]
    assert (rollback.actor, rollback.reason) == ("ops", "false rejects on line 3")
    screenshot(browser, tmp_path / "pipeline-rolled-back.png")


def test_a_blank_screenshot_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "blank.png"
    Image.new("RGB", (64, 64), "white").save(path)

    class Blank:
        def save_screenshot(self, target: str) -> bool:
            return True

    with pytest.raises(AssertionError, match="looks blank"):
        screenshot(Blank(), path)  # type: ignore[arg-type]
