"""/docs in headless Chromium: Swagger UI renders every operation from the server's own files."""

from __future__ import annotations

import shutil
from pathlib import Path

from playwright.sync_api import ConsoleMessage, Request, sync_playwright

from launcher.stack import Stack

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "test-results" / "docs.png"
# GET /, /status, /metrics, /models; GET + POST /reload; POST /predict, /models/{name}/predict; GET + POST /forecast
# and /models/{name}/forecast; GET + POST /actuals; GET /accuracy
OPERATIONS = 15
# Headless, as root, on a machine without internet: no sandbox, no background calls to Google.
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync",
]  # fmt: skip


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Chromium is needed (Debian: apt-get install chromium; `make test` installs it)"
    return path


def test_docs_render_every_operation_without_errors_or_outside_requests(stack: Stack) -> None:
    errors: list[str] = []
    requested: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda message: _record_error(message, errors))
            page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
            page.on("requestfailed", lambda request: errors.append(f"failed: {request.url}"))
            page.on("request", lambda request: _record_url(request, requested))
            page.goto(f"{stack.url}/docs", wait_until="networkidle")
            page.wait_for_function(f"document.querySelectorAll('.opblock').length >= {OPERATIONS}", timeout=30_000)
            operations = page.locator(".opblock-summary-path").all_inner_texts()
            title = page.locator(".info .title").inner_text()
            SCREENSHOT.parent.mkdir(exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert sorted(operations) == sorted(
        [
            "/",
            "/status",
            "/reload",
            "/reload",
            "/predict",
            "/forecast",
            "/forecast",
            "/actuals",
            "/actuals",
            "/accuracy",
            "/metrics",
            "/models",
            "/models/{name}/predict",
            "/models/{name}/forecast",
            "/models/{name}/forecast",
        ]
    )
    assert title.startswith("Store-item sales forecast")
    outside = [url for url in requested if not url.startswith(stack.url)]
    assert outside == [], "the docs page must not load anything from elsewhere (no CDN)"
    assert any(url.endswith("/docs/swagger-ui-bundle.js") for url in requested)
    assert SCREENSHOT.stat().st_size > 20_000  # a rendered page, not a blank one


def _record_error(message: ConsoleMessage, errors: list[str]) -> None:
    if message.type == "error":
        errors.append(f"console: {message.text}")


def _record_url(request: Request, requested: list[str]) -> None:
    requested.append(request.url)
