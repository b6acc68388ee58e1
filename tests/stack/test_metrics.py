"""GET /metrics: traffic moves every metric as it should, across all workers and mules."""

from __future__ import annotations

import threading

import pytest
import requests

from launcher.stack import Stack
from tests.stack.load import distinct_rows, mules_stopped
from tests.stack.scrape import Scrape, scrape, scrape_until


def delta(before: Scrape, after: Scrape, name: str, **labels: str) -> float:
    return after.value(name, **labels) - before.value(name, **labels)


def test_traffic_moves_every_metric(stack: Stack) -> None:
    url = stack.url
    rows = [{"date": d, "store": s, "item": i} for d, s, i in distinct_rows(40, seed=7)]
    before = scrape(url)
    answers = [requests.post(f"{url}/predict", json=row, timeout=5).json()["sales"] for row in rows[:20]]
    batch = requests.post(f"{url}/predict", json=rows[20:], timeout=5).json()["predictions"]
    answers += [answer["sales"] for answer in batch]
    answers.append(requests.post(f"{url}/predict", params=rows[0], timeout=5).json())
    bad = requests.post(f"{url}/predict", json={**rows[0], "date": "2018-02-30"}, timeout=5)
    assert bad.status_code == 422
    after = scrape_until(
        url, lambda now: delta(before, now, "forecast_http_request_duration_seconds_count", endpoint="/predict") >= 23
    )

    def moved(name: str, **labels: str) -> float:
        return delta(before, after, name, **labels)

    # the web workers: requests by route and status, and their latency
    assert moved("forecast_http_requests_total", endpoint="/predict", method="POST", status="200") == 22
    assert moved("forecast_http_requests_total", endpoint="/predict", method="POST", status="422") == 1
    assert moved("forecast_http_request_duration_seconds_count", endpoint="/predict") == 23
    assert moved("forecast_http_request_duration_seconds_sum", endpoint="/predict") > 0
    # the mules: rows, batches (many jobs per call under load, one per call here), predict time, sales
    assert moved("forecast_rows_predicted_total") == 41
    assert moved("forecast_mule_batch_rows_sum") == 41
    assert 1 <= moved("forecast_mule_batch_rows_count") <= 22
    assert moved("forecast_mule_predict_seconds_count") == moved("forecast_mule_batch_rows_count")
    assert moved("forecast_mule_predict_seconds_sum") > 0
    assert moved("forecast_predicted_sales_count") == 41
    assert moved("forecast_predicted_sales_sum") == pytest.approx(sum(answers), rel=1e-9)
    assert moved("forecast_rejected_requests_total") == 0
    assert moved("forecast_timed_out_requests_total") == 0
    # state at scrape time: nothing in flight or queued, both mules up on the version /status names
    assert after.value("forecast_jobs_in_flight") == 0
    assert after.value("forecast_queue_depth") == 0
    assert after.value("forecast_jobs_in_flight_limit") == 126  # (128 slots - 1) // 2 workers * 2
    status = requests.get(f"{url}/status", timeout=5).json()
    for mule in status["mules"]:
        mule_id = str(mule["id"])
        assert after.value("forecast_mule_up", mule=mule_id) == 1
        assert (
            after.value("forecast_mule_info", mule=mule_id, pid=str(mule["pid"]), model_version=status["model_version"])
            == 1
        )
        assert after.value("forecast_mule_starts_total", mule=mule_id) == 1
        assert 0 <= after.value("forecast_mule_heartbeat_age_seconds", mule=mule_id) < 10


def test_a_timeout_is_counted_and_its_jobs_leave_the_in_flight_gauge(stack: Stack) -> None:
    """With the mules stopped no job is scored: the request ends in 504 at its deadline (5 s), whatever
    the machine's speed; the mule that wakes up later drops the expired job unscored."""
    url = stack.url
    before = scrape(url)
    answer: dict[str, requests.Response] = {}
    row = {"date": "2018-01-21", "store": 3, "item": 4}
    with mules_stopped(url):
        sender = threading.Thread(
            target=lambda: answer.update(response=requests.post(f"{url}/predict", json=row, timeout=30))
        )
        sender.start()
        # seen while the request waits (the gauge is sampled every 0.25 s)
        waiting = scrape_until(url, lambda now: now.value("forecast_jobs_in_flight") >= 1)
        sender.join()
    assert waiting.value("forecast_jobs_in_flight") == 1
    response = answer["response"]
    assert response.status_code == 504, response.text[:300]
    assert response.json()["code"] == "deadline_exceeded"
    after = scrape_until(
        url,
        lambda now: (
            delta(before, now, "forecast_mule_jobs_expired_total") >= 1
            and delta(before, now, "forecast_timed_out_requests_total") >= 1
            and now.value("forecast_jobs_in_flight") == 0
        ),
    )
    assert delta(before, after, "forecast_timed_out_requests_total") == 1
    assert delta(before, after, "forecast_http_requests_total", endpoint="/predict", status="504") == 1
    assert delta(before, after, "forecast_mule_jobs_expired_total") == 1  # dropped, not scored
    assert delta(before, after, "forecast_rows_predicted_total") == 0
    assert after.value("forecast_jobs_in_flight") == 0
