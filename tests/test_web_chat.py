"""The web chat page in real headless Chromium: type, watch the reply stream, multi-turn, controls, stop.

Chromium and its driver must be installed (Debian: `apt-get install -y chromium chromium-driver`;
the README's test command does it). Without them this test fails rather than skips, so CI cannot
pass without having run it. The screenshot lands in `test-artifacts/web_chat.png`.
"""

import shutil
import time
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from myllm.chat import prompt_ids
from myllm.serve.app import create_app
from myllm.serve.server import ServerThread, load_for_serving
from serve_fixtures import make_served_run, one_thread  # noqa: F401  (autouse)

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"


@pytest.fixture(scope="module")
def browser():
    chromium, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    assert chromium and driver, "install Chromium and its driver: apt-get install -y chromium chromium-driver"
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-dev-shm-usage", "--window-size=1100,800"):
        opts.add_argument(flag)
    b = webdriver.Chrome(service=Service(executable_path=driver), options=opts)
    yield b
    b.quit()


def test_chat_page_streams_replies_multi_turn_with_controls_and_stop(tiny_data, tmp_path, browser, monkeypatch):
    model, tok, _ = load_for_serving(make_served_run(tiny_data, tmp_path / "run"))
    real = model.forward

    def slow(*args, **kwargs):  # 15 ms a token, so the browser can watch the reply grow
        time.sleep(0.015)
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "forward", slow)
    app = create_app(model, tok, "run", max_batch=4)
    engine = app.state.service.engine
    submitted = []
    submit = engine.submit
    monkeypatch.setattr(engine, "submit", lambda p, params, cb=None: submitted.append((p, params)) or
                        submit(p, params, cb))

    with ServerThread(app) as url:
        browser.get(url + "/")
        assert browser.title == "MyLLM chat"
        # Sampling controls: temperature, top-p, a seed and a short reply.
        browser.execute_script("for (const [id, v] of [['temperature', 1.2], ['top_p', 0.9]]) {"
                               "const e = document.getElementById(id); e.value = v;"
                               "e.dispatchEvent(new Event('input'));}")
        browser.find_element(By.ID, "seed").send_keys("5")
        limit = browser.find_element(By.ID, "max_tokens")
        limit.clear()
        limit.send_keys("40")

        def say(text: str) -> list[int]:
            """Send `text`; return the distinct reply lengths seen while it streamed."""
            box = browser.find_element(By.ID, "input")
            box.send_keys(text)
            browser.find_element(By.ID, "send").click()
            seen = set()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                bubbles = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")
                if bubbles:
                    seen.add(len(bubbles[-1].get_property("textContent")))
                    if bubbles[-1].get_attribute("data-done") == "true":
                        break
                time.sleep(0.02)
            return sorted(seen)

        lengths = say("Where does the cat sit?")
        replies = browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")
        first = replies[-1].get_property("textContent")
        assert first and len([n for n in lengths if 0 < n < len(first)]) >= 2  # it grew while streaming
        params = submitted[-1][1]
        assert (params.temperature, params.top_p, params.seed, params.max_new_tokens) == (1.2, 0.9, 5, 40)
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "web_chat.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 1000

        # Multi-turn: the second request carries the first exchange, rendered by the one chat template.
        say("And the dog?")
        want = prompt_ids(tok, [{"role": "user", "content": "Where does the cat sit?"},
                                {"role": "assistant", "content": first},
                                {"role": "user", "content": "And the dog?"}])
        assert submitted[-1][0] == want

        # New chat forgets the history; then Stop cuts a long reply off, and its KV-cache slot is freed.
        browser.find_element(By.ID, "reset").click()
        assert browser.find_elements(By.CSS_SELECTOR, ".msg") == []
        limit.clear()
        limit.send_keys("900")
        browser.find_element(By.ID, "input").send_keys("Tell me everything.")
        browser.find_element(By.ID, "send").click()
        deadline = time.monotonic() + 20
        while len(browser.find_elements(By.CSS_SELECTOR, ".msg.assistant")[-1].get_property("textContent")) < 5:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        browser.find_element(By.ID, "stop").click()
        assert submitted[-1][0] == prompt_ids(tok, [{"role": "user", "content": "Tell me everything."}])
        deadline = time.monotonic() + 10
        while engine.load()["active"] and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.load()["active"] == 0 and engine.stats["cancelled"] >= 1
        assert browser.find_element(By.ID, "send").is_enabled()
        browser.save_screenshot(str(ARTIFACTS / "web_chat_stopped.png"))
