"""The search page in a real headless browser (Debian's chromium driven by playwright) against a
real uvicorn server on 127.0.0.1: token login, upload by file picker and by drag and drop, ranked
results with scores and verdict, gallery modality switch, an error message for a bad file. A
screenshot of the results page is kept as ``tests/artifacts/serve_results.png``."""

from __future__ import annotations

import base64
import shutil
import time
from pathlib import Path

import pytest

from _serve_fixtures import build_service, running_server
from conftest import REPO
from vireid.serve import create_app

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
TOKEN = "browser-test-token-123"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _chromium() -> str:
    path = CHROMIUM if CHROMIUM.is_file() else None
    found = shutil.which("chromium")
    if path is None and found is None:
        pytest.fail("the browser test needs Debian's chromium at /usr/bin/chromium; install it with "
                    "`sudo apt-get install chromium` (make test does this) and run the tests again")
    return str(path or found)


def wait_until(page, expression: str, timeout: float = 30.0) -> None:
    """Poll a JavaScript expression until it is true (``page.wait_for_function`` evaluates strings
    with ``eval``, which the page's Content-Security-Policy rightly forbids)."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}")
        time.sleep(0.05)


def test_search_page_in_a_real_browser(tiny_synth_root, tmp_path):
    executable = _chromium()
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the browser test needs the python package playwright; install vireid's test extras")

    service = build_service(tiny_synth_root, tmp_path / "svc", ids=(1, 2, 3, 4, 5, 6))
    app = create_app(service.embedder, service.index, token=TOKEN)
    console: list[str] = []
    crashes: list[str] = []
    with running_server(app) as base, sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=executable, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 900})
        try:
            page = context.new_page()
            page.on("console", lambda msg: console.append(msg.text) if msg.type == "error" else None)
            page.on("pageerror", lambda err: crashes.append(str(err)))

            # without the token: the login form; with it: a cookie, then the page itself
            assert page.goto(base + "/").status == 401
            assert page.locator("input[name=token]").is_visible()
            page.fill("input[name=token]", TOKEN)
            page.click("button[type=submit]")
            page.wait_for_selector("#drop")
            assert page.url == base + "/"  # the token left the address bar
            wait_until(page, "document.getElementById('info').textContent.includes('24 gallery images')")
            assert "match threshold" in page.inner_text("#info")

            # upload a visible query with the file picker: the infrared gallery is searched by default
            page.set_input_files("#file", str(service.query_member))
            page.wait_for_selector("body[data-state=done]")
            cards = page.locator("#results .result")
            assert cards.count() == 10
            ranks = [int(r) for r in cards.evaluate_all("els => els.map(e => e.dataset.rank)")]
            scores = [float(s) for s in cards.evaluate_all("els => els.map(e => e.dataset.score)")]
            assert ranks == list(range(1, 11)) and scores == sorted(scores, reverse=True)
            assert page.locator("#results .mod-infrared").count() == 10
            wait_until(page, "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
            assert page.inner_text("#verdict").startswith("No match")  # a different modality never scores 1
            assert page.locator("#preview").is_visible()

            # switch the gallery to visible: the query image itself comes first, a match
            page.click("#gallery-modality label:has-text('Visible')")
            page.wait_for_selector("body[data-gallery-modality=visible][data-state=done]")
            first = cards.first
            assert int(first.get_attribute("data-id")) == 0 and float(first.get_attribute("data-score")) > 0.999
            assert first.locator(".badge").inner_text() == "match"
            assert page.inner_text("#verdict").startswith("Match")
            assert page.locator("#results .mod-visible").count() == 10
            wait_until(page, "[...document.querySelectorAll('#results img')].every(i => i.complete && i.naturalWidth > 0)")
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            shot = ARTIFACTS / "serve_results.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 20_000

            # drag and drop an infrared image of another identity onto the drop zone
            dropped = service.query_member.parent.parent.parent / "cam3" / "0002" / "0001.jpg"
            payload = base64.b64encode(dropped.read_bytes()).decode()
            page.evaluate("""(b64) => {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                const dt = new DataTransfer();
                dt.items.add(new File([bytes], 'dropped.jpg', {type: 'image/jpeg'}));
                document.getElementById('drop').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true, cancelable: true}));
            }""", payload)
            page.click("#query-modality label:has-text('Infrared')")
            page.click("#gallery-modality label:has-text('Infrared')")
            page.wait_for_selector("body[data-gallery-modality=infrared][data-state=done]")
            wait_until(page, "document.querySelector('#results .result').dataset.score > 0.999")
            assert page.locator("#results .result").first.get_attribute("data-id") == str(
                list(service.index.metadata.paths).index("cam3/0002/0001.jpg"))

            # a file that is not an image: one sentence in the error box, nothing else breaks
            page.set_input_files("#file", files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"not an image"}])
            page.wait_for_selector("body[data-state=error]")
            assert "not an image" in page.inner_text("#error") and page.locator("#error").is_visible()
            assert page.locator("#results .result").count() == 0
        finally:
            context.close()
    # the page runs under a strict Content-Security-Policy (hashes of its inline script and style):
    # a blocked script or style, or any script error, would show here
    assert not crashes, crashes
    assert not [m for m in console if "Content Security Policy" in m], console
