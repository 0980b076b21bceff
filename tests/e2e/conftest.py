"""A live portal on a free loopback port and Debian's chromium driven by Playwright."""

from __future__ import annotations

import os
import shutil
import threading

import pytest
from werkzeug.serving import make_server

CHROMIUM = os.environ.get("TIDEMARK_CHROMIUM") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium")
                                                    else shutil.which("chromium"))
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def live_server(app):
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def chromium():
    if not CHROMIUM:
        pytest.fail("chromium is not installed (make test installs Debian's chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def expected(message: str) -> bool:
    """Answers the pages send on purpose (bad password 401, form errors 422, a live stream refused
    429) also log as errors."""
    return message.startswith("Failed to load resource") and any(code in message for code in ("401", "403", "422", "429"))


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" and not expected(msg.text) else None)
    yield page
    context.close()
    # No script error and no CSP violation on any page the test visited.
    assert errors == []


def wait_for_htmx(page) -> None:
    """Until htmx has no request, swap or settle under way: an element swapped in only listens
    to its hx-trigger once htmx has processed it, and typing before that is lost."""
    page.wait_for_function("() => !document.querySelector('.htmx-request, .htmx-swapping, .htmx-settling')")
