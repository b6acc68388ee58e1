"""The planner page (/ui) in headless Chromium through nginx: it draws what the API answers, and says what went wrong.

One stack of the module's own, on a copy of the registry (its actuals store starts empty beside it), serving
dates up to 200 days past the training data: a 52-week horizon is a real 422 from /forecast.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import requests
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from forecast.registry import Registry
from launcher.stack import Stack
from tests.helpers import wait_for
from tests.stack.stacks import start_stack
from tests.stack.test_docs_ui import CHROMIUM_ARGS, chromium

pytestmark = pytest.mark.xdist_group("ui")

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "test-results"
DOCS_IMAGE = ROOT / "docs" / "images" / "planner.png"
SERIES = "store=3&item=23&weeks=13&granularity=week"


@pytest.fixture(scope="module")
def ui_stack(tmp_path_factory: pytest.TempPathFactory, serving_registry: Registry) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("ui")
    shutil.copytree(serving_registry.root, root / "registry")
    registry = Registry(root / "registry")
    # "plain": v2's trees as a model of their own, trained without an interval calibration: no bands
    metadata = {k: v for k, v in registry.metadata("v2").items() if k not in ("version", "checksum")}
    plain = registry.named("plain")
    plain.set_alias("production", plain.verify(plain.register(registry.model_path("v2").read_text(), metadata)).version)
    stack = start_stack(root / "run", registry, FORECAST_MAX_HORIZON_DAYS="200")
    # "plain" loaded into a mule before the page asks for it: its first use loads it, which on a loaded machine
    # (the parallel test run) can take longer than a request's deadline, and the page then shows that 504
    row = {"date": "2017-01-21", "store": 3, "item": 23}  # within FORECAST_MAX_HORIZON_DAYS of its training data
    wait_for(lambda: requests.post(f"{stack.url}/models/plain/predict", json=row, timeout=30).status_code == 200, 60)
    yield stack
    stack.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        found = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_ARGS)
        yield found
        found.close()


class Visit:
    """A page of the browser with every console error, failed request and requested URL recorded."""

    def __init__(self, browser: Browser, stack: Stack) -> None:
        self.stack = stack
        self.errors: list[str] = []
        self.requested: list[str] = []
        self.page: Page = browser.new_page(viewport={"width": 1280, "height": 820}, accept_downloads=True)
        self.page.on("console", self._console)
        self.page.on("pageerror", lambda error: self.errors.append(f"page error: {error}"))
        self.page.on("requestfailed", lambda request: self.errors.append(f"failed: {request.url}"))
        self.page.on("request", lambda request: self.requested.append(request.url))

    def _console(self, message: ConsoleMessage) -> None:
        # The browser logs a failed fetch (a 4xx the page shows) as a console error of its own: not the page's.
        if message.type == "error" and "the server responded with a status of" not in message.text:
            self.errors.append(f"console: {message.text}")

    def open(self, query: str) -> None:
        self.page.goto(f"{self.stack.url}/ui?{query}")
        self.settled()

    def settled(self) -> None:
        self.page.wait_for_function("window.forecastUi && window.forecastUi.ready", timeout=30_000)

    def change(self, selector: str, value: str) -> None:
        """Pick ``value`` with the keyboard-reachable control, and wait for the page to draw again."""
        draws = self.ui()["draws"]
        self.page.select_option(selector, value)
        self.page.wait_for_function(f"window.forecastUi.ready && window.forecastUi.draws > {draws}", timeout=30_000)

    def ui(self) -> dict[str, Any]:
        found: dict[str, Any] = self.page.evaluate(
            "({ready: forecastUi.ready, draws: forecastUi.draws, plotted: forecastUi.plotted,"
            " request: forecastUi.request, firstChartMs: forecastUi.firstChartMs, error: forecastUi.error || null,"
            " accuracy: forecastUi.accuracy || null})"
        )
        return found

    def inked_pixels(self) -> int:
        """Pixels of the chart's canvas that are not blank: the chart was drawn, not just placed."""
        count: int = self.page.evaluate(
            """() => { const c = document.querySelector('#chart canvas');
                       const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
                       let n = 0; for (let i = 3; i < d.length; i += 4) if (d[i] > 0) n++; return n; }"""
        )
        return count

    def outside(self) -> list[str]:
        return [url for url in self.requested if not url.startswith(self.stack.url) and not url.startswith("blob:")]


@pytest.fixture
def visit(browser: Browser, ui_stack: Stack) -> Iterator[Visit]:
    found = Visit(browser, ui_stack)
    yield found
    found.page.close()
    assert found.errors == []
    assert found.outside() == [], "the page must not load anything from elsewhere (no CDN)"


def api_forecast(stack: Stack, request: dict[str, Any], accept: str = "application/json") -> requests.Response:
    answer = requests.post(f"{stack.url}{request['path']}", json=request["body"], headers={"Accept": accept},
                           timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    return answer


def assert_plots_the_api_s_forecast(visit: Visit) -> dict[str, Any]:
    """The plotted forecast and bands are /forecast's answer to the request the page made, value for value."""
    ui = visit.ui()
    forecasts = api_forecast(visit.stack, ui["request"]).json()["forecasts"]
    plotted = ui["plotted"]
    ahead = [n for n, value in enumerate(plotted["sales"]) if value is not None]
    assert [plotted["sales"][n] for n in ahead] == [f["sales"] for f in forecasts]
    for side, level in (("lower", "80"), ("upper", "80"), ("lower", "95"), ("upper", "95")):
        assert [plotted[f"{side}{level}"][n] for n in ahead] == [f[side][level] for f in forecasts]
    assert visit.inked_pixels() > 5_000
    return ui


def test_the_page_draws_the_forecast_the_api_answers(visit: Visit) -> None:
    visit.open(SERIES)
    ui = assert_plots_the_api_s_forecast(visit)
    assert ui["request"]["body"] == {"days": 91, "granularity": "week", "level": [80, 95],
                                     "series": [{"store": 3, "item": 23}]}  # fmt: skip
    assert visit.page.url.endswith(f"/ui?model=default&{SERIES}")  # the state is in the URL: a link can be shared
    assert visit.page.locator("#version dd").all_inner_texts()[:2] == ["default", "v1"]
    assert any(url.endswith("/ui/vendor/uPlot.iife.min.js") for url in visit.requested)
    RESULTS.mkdir(exist_ok=True)
    visit.page.screenshot(path=str(RESULTS / "ui.png"), full_page=True)
    DOCS_IMAGE.parent.mkdir(exist_ok=True)  # the docs' planner page shows it (docs/planner-page.md)
    shutil.copyfile(RESULTS / "ui.png", DOCS_IMAGE)
    print(f"\ntime to first chart (navigation start to the chart drawn, this machine): {ui['firstChartMs']} ms")


def test_switching_to_daily_and_to_a_store_total_redraws_with_the_api_s_values(visit: Visit) -> None:
    visit.open(SERIES)
    visit.change("#granularity", "day")
    ui = assert_plots_the_api_s_forecast(visit)
    assert ui["request"]["body"]["granularity"] == "day"
    assert len([v for v in ui["plotted"]["sales"] if v is not None]) == 91
    visit.change("#item", "all")
    ui = assert_plots_the_api_s_forecast(visit)
    assert ui["request"]["body"]["totals"] == "store"
    assert len(ui["request"]["body"]["series"]) == 50
    assert "item=all" in visit.page.url


def test_the_download_is_the_forecast_csv_byte_for_byte(visit: Visit) -> None:
    visit.open(SERIES)
    with visit.page.expect_download() as download:
        visit.page.focus("#download")  # a button: it works from the keyboard
        visit.page.keyboard.press("Enter")
    saved = Path(download.value.path()).read_bytes()
    assert saved == api_forecast(visit.stack, visit.ui()["request"], "text/csv").content
    assert saved.startswith(b"date,days,store,item,sales,lower_80,upper_80,lower_95,upper_95\n")


def test_the_accuracy_panel_and_the_history_show_the_api_s_numbers_once_actuals_are_in(
    visit: Visit, ui_stack: Stack
) -> None:
    visit.open(SERIES)
    assert "No actuals yet" in visit.page.locator("#accuracy").inner_text()
    # before any actuals: the production version's last training weeks, said so, summed per ISO week
    training = requests.get(f"{ui_stack.url}/actuals?model=default&store=3&item=23", timeout=30).json()
    assert (training["source"], len(training["actuals"])) == ("training data of default v1", 56)
    assert "the training data of default v1" in visit.page.locator("#message").inner_text()
    assert_plots_weekly_sums(visit, training["actuals"])
    body = actuals_csv()
    loaded = requests.post(f"{ui_stack.url}/actuals", data=body, headers={"Content-Type": "text/csv"}, timeout=60)
    assert loaded.status_code == 200, loaded.text
    visit.open(SERIES)
    report = requests.get(f"{ui_stack.url}/accuracy?model=default", timeout=60).json()
    production = next(v for v in report["versions"] if "production" in v["aliases"])
    shown = visit.ui()["accuracy"]
    assert shown == {"version": "v1", "smape": production["smape"], "baseline": production["baseline"]["smape"]}
    assert f"{production['smape']:.2f}" in visit.page.locator("#accuracy").inner_text()
    stored = requests.get(f"{ui_stack.url}/actuals?store=3&item=23", timeout=30).json()
    assert (stored["source"], len(stored["actuals"])) == ("actuals", 28)
    assert_plots_weekly_sums(visit, stored["actuals"])


def assert_plots_weekly_sums(visit: Visit, rows: list[dict[str, Any]]) -> None:
    """The plotted history is ``rows``' sales summed per ISO week (Monday to Sunday), week by week."""
    weekly: dict[dt.date, int] = {}  # by their Monday
    for row in rows:
        day = dt.date.fromisoformat(row["date"])
        monday = day - dt.timedelta(days=day.weekday())
        weekly[monday] = weekly.get(monday, 0) + row["sales"]
    plotted = visit.ui()["plotted"]
    assert [v for v in plotted["actual"] if v is not None] == [weekly[monday] for monday in sorted(weekly)]


def actuals_csv() -> str:
    """28 days of actuals of every series, the last 28 days of the training data (2016-12-04..31): within what the
    version knows, and a year after days the seasonal-naive baseline can read (none: it has no rows)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["date", "store", "item", "sales"])
    generator = np.random.default_rng(7)
    for day in np.arange(np.datetime64("2016-12-04"), np.datetime64("2017-01-01")):
        for store in range(1, 11):
            for item in range(1, 51):
                writer.writerow([str(day), store, item, int(generator.integers(5, 80))])
    return out.getvalue()


def test_an_error_from_the_api_is_shown_to_the_user(visit: Visit) -> None:
    visit.open("store=3&item=23&weeks=52&granularity=week")  # 364 days: past the 200 this stack serves
    shown = visit.page.locator("#message").inner_text()
    assert shown.startswith("The service refused the request (422): ")
    direct = requests.post(
        f"{visit.stack.url}/forecast",
        json={"series": [{"store": 3, "item": 23}], "days": 364, "granularity": "week", "level": [80, 95]},
        timeout=30,
    )
    assert direct.status_code == 422
    assert direct.json()["message"] in shown
    assert visit.page.locator("#message").get_attribute("role") == "alert"


def test_a_version_without_bands_says_so_and_plots_the_forecast(visit: Visit) -> None:
    visit.open(f"model=plain&{SERIES}")
    ui = visit.ui()
    assert ui["request"]["path"] == "/models/plain/forecast"
    answer = api_forecast(visit.stack, ui["request"]).json()
    assert "none" in answer["intervals"]
    assert (
        visit.page.locator("#message")
        .inner_text()
        .startswith(f"No bands for this version: {answer['intervals']['none']}")
    )
    plotted = ui["plotted"]
    assert [v for v in plotted["sales"] if v is not None] == [f["sales"] for f in answer["forecasts"]]
    assert set(plotted["lower80"]) == {None}
    assert visit.inked_pixels() > 2_000


def test_the_pickers_are_labelled_controls_reachable_by_keyboard(visit: Visit) -> None:
    visit.open(SERIES)
    for control, label in (("#model", "Model"), ("#store", "Store"), ("#item", "Item"), ("#weeks", "Weeks ahead"),
                           ("#granularity", "By")):  # fmt: skip
        text = visit.page.locator(control).evaluate("e => e.labels[0].firstChild.textContent.trim()")
        assert text == label
    draws = visit.ui()["draws"]
    visit.page.focus("#granularity")
    visit.page.keyboard.press("ArrowDown")  # from week to day, with the keyboard only
    wait_for(lambda: visit.ui()["ready"] and visit.ui()["draws"] > draws)
    assert visit.ui()["request"]["body"]["granularity"] == "day"
    assert "granularity=day" in visit.page.url
