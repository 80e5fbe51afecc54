"""The web page in a real browser: `lstmgen serve` in a subprocess, headless Chromium driven by Selenium.

Needs Debian's ``chromium`` and ``chromium-driver`` packages and the ``selenium`` package (in the test
extra); skips, saying which is missing, where they are absent. No browser or driver is ever downloaded.
Set LSTMGEN_SCREENSHOT=path.png to keep a screenshot of the page with its text.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import make_text
from lstmgen.cli.main import main

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--window-size=1280,900"]


@pytest.fixture(scope="module")
def webdriver_module():
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
    pytest.importorskip("fastapi", reason="the serve extra (fastapi) is not installed")
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not os.access(path, os.X_OK):
            pytest.skip(f"no {path}: install Debian's {package} package (apt-get install chromium chromium-driver)")
    from selenium import webdriver

    return webdriver


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get_json(url: str, body: dict = None) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, webdriver_module):
    """`python -m lstmgen serve RUN --port P` as a user starts it; yields the page's URL."""
    root = tmp_path_factory.mktemp("browser")
    (root / "novel.txt").write_text(make_text(1, 120), encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LSTMGEN_CACHE", str(root / "cache"))
        assert main(["train", str(root / "novel.txt"), "--out", str(root / "run"), "--preset", "tiny",
                     "--epochs", "2", "--seed", "3"]) == 0
    port = free_port()
    log = open(root / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "lstmgen", "serve", str(root / "run"), "--port", str(port)],
                               stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 90
    while True:
        try:
            if get_json(url + "/health")["status"] == "ok":
                break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail("lstmgen serve did not start:\n" + (root / "server.log").read_text())
        time.sleep(0.2)
    yield url
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


@pytest.fixture
def browser(webdriver_module, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never fetch a browser or driver
    options = webdriver_module.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + [f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver_module.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def fill(driver, element_id: str, value: str) -> None:
    from selenium.webdriver.common.by import By

    element = driver.find_element(By.ID, element_id)
    element.clear()
    element.send_keys(value)


def test_a_person_types_a_prompt_and_watches_the_text_appear(browser, server: str, tmp_path: Path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    # a card read while the page replaces it is read again at the next poll
    wait = WebDriverWait(browser, 60, poll_frequency=0.02, ignored_exceptions=(StaleElementReferenceException,))
    browser.get(server + "/")
    wait.until(lambda d: "parameters" in d.find_element(By.ID, "run").text)  # /info was read

    # a long text, stopped midway: the text shows while it is being written, and Stop stops it
    fill(browser, "prompt", "郭靖")
    fill(browser, "length", "5000")
    fill(browser, "num_samples", "8")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: len(d.find_element(By.CSS_SELECTOR, ".sample .written").text) > 10)
    assert browser.find_element(By.CSS_SELECTOR, ".sample").get_attribute("data-state") == "writing"
    browser.find_element(By.ID, "stop").click()
    wait.until(lambda d: "stopped" in d.find_element(By.ID, "status").text)

    # the settings on the page reach the server: the page shows what the API writes with them
    fill(browser, "length", "120")
    fill(browser, "num_samples", "2")
    fill(browser, "seed", "7")
    Select(browser.find_element(By.ID, "stop_at")).select_by_value("sentence")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".sample") and all(
        card.get_attribute("data-state") == "done" for card in d.find_elements(By.CSS_SELECTOR, ".sample")))
    shown = [p.text for p in browser.find_elements(By.CSS_SELECTOR, ".sample .text")]
    expected = get_json(server + "/generate", {"prompt": "郭靖", "length": 120, "num_samples": 2, "seed": 7,
                                               "stop_at": "sentence"})["texts"]
    assert shown == expected and all(text.startswith("郭靖") for text in shown)
    assert "seed 7" in browser.find_element(By.ID, "status").text

    png = base64.b64decode(browser.get_screenshot_as_base64())
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
    (tmp_path / "serve.png").write_bytes(png)
    if os.environ.get("LSTMGEN_SCREENSHOT"):
        Path(os.environ["LSTMGEN_SCREENSHOT"]).write_bytes(png)

    # a chapter to read first: the page sends the context and the adapt setting with the rest
    context = make_text(7, 20)
    expected = get_json(server + "/generate", {"prompt": "郭靖", "length": 120, "num_samples": 2, "seed": 7,
                                               "stop_at": "sentence", "context": context, "adapt": "cache"})["texts"]
    assert expected != shown  # so the page's text below tells whether the context went with the request
    browser.find_element(By.CSS_SELECTOR, "#context-box summary").click()
    fill(browser, "context", context)
    Select(browser.find_element(By.ID, "adapt")).select_by_value("cache")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: [p.text for p in d.find_elements(By.CSS_SELECTOR, ".sample .text")] == expected and all(
        card.get_attribute("data-state") == "done" for card in d.find_elements(By.CSS_SELECTOR, ".sample")))

    # a setting the model cannot honour: a readable message, not a broken page
    fill(browser, "acrostic", "鳯")
    browser.find_element(By.ID, "generate").click()
    wait.until(lambda d: d.find_element(By.ID, "error").is_displayed())
    assert "never saw" in browser.find_element(By.ID, "error").text

    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"
              and "/generate/stream" not in entry["message"]]  # the 422 above is logged as a failed request
    assert errors == []  # no script error, nothing blocked by the page's content security policy
