"""The worker-mule contract: round trips, sizes, byte order, and refusal of anything else."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest

from serving.messages import (
    ASLEEP,
    AWAKE,
    MAX_ADDRESS_BYTES,
    MAX_NAME_BYTES,
    MAX_OUTPUTS_WIDTH,
    NOT_SERVING,
    NOTICE_CLAIMED,
    NOTICE_DONE,
    UWSGI_QUEUE_ITEM_HEADER_BYTES,
    Heartbeat,
    Job,
    LoadRequest,
    MessageError,
    ModelRoute,
    MuleState,
    Notice,
    Result,
    Routes,
    ShadowJob,
    awake_flag,
    decode_rows,
    encode_predictions,
    encode_rows,
    is_job,
    is_shadow_job,
    max_rows_per_job,
    max_rows_per_result,
)
from serving.settings import Settings

ADDRESS = b"\0forecast-worker-" + b"a" * 24


def job(rows: int = 3, attempt: int = 1) -> Job:
    days = [17000 + n for n in range(rows)]
    return Job(os.urandom(16), ADDRESS, 1.8e9, encode_rows(days, [1] * rows, [2] * rows), "store-7", "v12", attempt)


def test_job_round_trip() -> None:
    original = job(attempt=2)
    decoded = Job.decode(original.encode())
    assert decoded == original
    assert decoded.row_count == 3
    assert decoded.key == original.id.hex()
    assert decode_rows(decoded.rows).tolist() == [[17000, 1, 2], [17001, 1, 2], [17002, 1, 2]]
    assert (decoded.model, decoded.version) == ("store-7", "v12")
    assert original.retried() == Job(original.id, ADDRESS, 1.8e9, original.rows, "store-7", "v12", 3)


def test_rows_and_predictions_are_little_endian_on_every_machine() -> None:
    """The byte order is the contract's, not the machine's: both sides read the same numbers."""
    assert encode_rows([1], [2], [258]) == struct.pack("<3i", 1, 2, 258)
    assert encode_predictions(np.array([1.5], dtype=">f8")) == struct.pack("<d", 1.5)
    assert encode_rows([1, 3], [2, 4], [258, 5]) == struct.pack("<6i", 1, 2, 258, 3, 4, 5)  # many rows: numpy
    assert encode_rows(np.array([1, 3]), np.array([2, 4]), np.array([258, 5])) == struct.pack("<6i", 1, 2, 258, 3, 4, 5)
    result = Result(b"i" * 16, 1, 1, "v1", predictions=struct.pack("<2d", 0.5, 31.7))
    assert result.sales_array().tolist() == [0.5, 31.7]
    with pytest.raises(MessageError):
        decode_rows(b"\0" * 13)


def test_a_full_job_fits_one_queue_slot() -> None:
    longest_address = b"\0" + b"a" * (MAX_ADDRESS_BYTES - 1)
    for slot in (8192, 65536):
        rows = max_rows_per_job(slot)
        names = "m" * MAX_NAME_BYTES, "v" * MAX_NAME_BYTES
        outputs = ("o" * (MAX_NAME_BYTES - 2), "p")
        biggest = Job(b"i" * 16, longest_address, 0.0, encode_rows([1] * rows, [1] * rows, [1] * rows), *names,
                      outputs=outputs)  # fmt: skip
        assert len(biggest.encode()) + UWSGI_QUEUE_ITEM_HEADER_BYTES <= slot
        over = rows + 1
        one_more = Job(b"i" * 16, longest_address, 0.0, encode_rows([1] * over, [1] * over, [1] * over), *names,
                       outputs=outputs)  # fmt: skip
        assert len(one_more.encode()) + UWSGI_QUEUE_ITEM_HEADER_BYTES > slot


def test_a_full_result_fits_one_cache_block() -> None:
    rows = max_rows_per_result(65536)
    result = Result(os.urandom(16), 2, 4242, "v" * 64, predictions=encode_predictions(np.full(rows, 1.5)))
    assert len(result.encode()) <= 65536
    rows = max_rows_per_result(65536, width=MAX_OUTPUTS_WIDTH)  # as many one-wide outputs as fit
    values = encode_predictions(np.full((rows, MAX_OUTPUTS_WIDTH), 1.5))
    widest = Result(os.urandom(16), 2, 4242, "v" * 64, predictions=values, widths=(1,) * (MAX_OUTPUTS_WIDTH - 1))
    assert len(widest.encode()) <= 65536


@pytest.mark.parametrize("damage", ["truncate", "magic", "format", "extra"])
def test_damaged_jobs_are_refused(damage: str) -> None:
    data = job().encode()
    damaged = {
        "truncate": data[:-1],
        "magic": b"XX" + data[2:],
        "format": data[:2] + bytes([9]) + data[3:],  # a job of another format version
        "extra": data + b"\0",
    }[damage]
    with pytest.raises(MessageError):
        Job.decode(damaged)


def test_shadow_jobs_and_routes_round_trip() -> None:
    shadow = ShadowJob(1.8e9, "store-7", "v13", "v12", encode_rows([17000, 17001], [1, 2], [3, 4]),
                       encode_predictions(np.array([10.5, 11.5])))  # fmt: skip
    assert ShadowJob.decode(shadow.encode()) == shadow
    assert (is_shadow_job(shadow.encode()), is_job(shadow.encode()), is_job(job().encode())) == (True, False, True)
    with pytest.raises(MessageError):
        ShadowJob.decode(shadow.encode()[:-1])
    routes = Routes({"default": ModelRoute("v2", "v3", 10), "store-7": ModelRoute("v1", None, 0, "v4", 5)}, 7,
                    {"default/v9": "does not verify"})  # fmt: skip
    assert Routes.decode(routes.encode()) == routes
    with pytest.raises(MessageError):
        Routes.decode(b'{"models": {"default": {"production": "v1", "colour": 3}}}')


def test_result_round_trips_predictions_and_errors() -> None:
    ok = Result(b"i" * 16, 1, 99, "v7", predictions=encode_predictions(np.array([1.25, 0.0, 31.7])))
    decoded = Result.decode(ok.encode())
    assert decoded == ok
    assert decoded.ok
    assert decoded.sales_array().tolist() == [1.25, 0.0, 31.7]
    failed = Result(b"i" * 16, 2, 98, "v7", error="ValueError")
    assert Result.decode(failed.encode()) == failed
    assert not Result.decode(failed.encode()).ok
    flagged = Result(
        b"i" * 16, 2, 98, "v7", error="model 'x' version v7 cannot be loaded", loaded=True, unloadable=True
    )
    assert Result.decode(flagged.encode()) == flagged


def test_a_job_asking_outputs_and_its_result_of_several_values_per_row_round_trip() -> None:
    job = Job(b"j" * 16, b"\0addr", 1.5e9, encode_rows([17000, 17001], [3, 3], [23, 23]), "default", "v2",
              outputs=("contributions", "leaves"))  # fmt: skip
    assert Job.decode(job.encode()) == job
    assert Job.decode(job.retried().encode()).outputs == ("contributions", "leaves")
    assert Job.decode(Job(b"j" * 16, b"\0addr", 1.5e9, b"", "default", "v2").encode()).outputs == ()
    spare = Job(b"j" * 16, b"\0addr", 1.5e9, b"", "default", "v2", spare=True)
    assert Job.decode(spare.encode()).spare
    assert Job.decode(spare.retried().encode()).spare
    assert not Job.decode(Job(b"j" * 16, b"\0addr", 1.5e9, b"", "default", "v2").encode()).spare
    # sales, two contributions and the expected value, a leaf
    values = np.array([[31.7, 0.1, -0.2, 3.4, 7.0], [28.0, 0.1, 0.3, 3.4, 9.0]])
    result = Result.decode(Result(b"i" * 16, 1, 99, "v2", encode_predictions(values), widths=(3, 1)).encode())
    assert (result.widths, result.width) == ((3, 1), 5)
    assert result.sales_array().tolist() == [31.7, 28.0]
    outputs = result.output_arrays(("contributions", "leaves"))
    assert outputs["contributions"].tolist() == [[0.1, -0.2, 3.4], [0.1, 0.3, 3.4]]
    assert outputs["leaves"].tolist() == [[7.0], [9.0]]
    with pytest.raises(MessageError, match="2 outputs for the 1 asked"):
        result.output_arrays(("contributions",))
    with pytest.raises(MessageError, match="whole rows"):
        Result.decode(Result(b"i" * 16, 1, 99, "v2", encode_predictions(values[:, :4]), widths=(3, 1)).encode())


@pytest.mark.parametrize("damage", ["short", "magic", "format", "half a float"])
def test_damaged_results_are_refused(damage: str) -> None:
    data = Result(b"i" * 16, 1, 99, "v7", predictions=encode_predictions(np.array([1.25]))).encode()
    damaged = {
        "short": b"FR",
        "magic": b"FJ" + data[2:],  # a job's magic is not a result's
        "format": data[:2] + bytes([9]) + data[3:],
        "half a float": data[:-3],
    }[damage]
    with pytest.raises(MessageError):
        Result.decode(damaged)


def test_notices_and_load_requests() -> None:
    job_id = os.urandom(16)
    for notice in (Notice(NOTICE_CLAIMED, job_id, 1234), Notice(NOTICE_DONE, job_id, 1)):
        assert Notice.decode(notice.encode()) == notice
    with pytest.raises(MessageError):
        Notice.decode(b"X" + job_id + b"\0\0\0\0")
    request = LoadRequest(job_id, ADDRESS, "v3", 12.5, "store-7")
    assert LoadRequest.decode(request.encode()) == request
    with pytest.raises(MessageError):
        LoadRequest.decode(b"R{not json")


def heartbeat(state: MuleState = MuleState.READY, version: str | None = "v1", sent_at: float = 100.0) -> Heartbeat:
    return Heartbeat(1, 4242, state, version, sent_at, 50.0, 7, None, (("default", "v1"), ("store-7", "v2")))


def test_heartbeat_round_trip_and_refusals() -> None:
    beat = heartbeat(MuleState.FAILED, None)
    assert Heartbeat.decode(beat.encode()) == beat
    for bad in (b"not json", b"[]", b'{"format": 2}', beat.encode().replace(b'"failed"', b'"dancing"')):
        with pytest.raises(MessageError):
            Heartbeat.decode(bad)


@pytest.mark.parametrize(
    ("beat", "now", "fresh", "serving"),
    [
        (heartbeat(), 110.0, True, True),  # exactly stale_after_s old: still fresh
        (heartbeat(), 110.5, False, False),  # stale: a hung or stopped mule
        (heartbeat(MuleState.FAILED, None), 101.0, True, False),  # no model
        (heartbeat(MuleState.LOADING, None), 101.0, True, False),  # its first load
        (heartbeat(MuleState.LOADING, "v1"), 101.0, True, True),  # mid-/reload: keeps the old model
    ],
)
def test_one_rule_for_fresh_and_one_for_serving(beat: Heartbeat, now: float, fresh: bool, serving: bool) -> None:
    assert beat.fresh(now, stale_after_s=10) is fresh
    assert beat.serving(now, stale_after_s=10) is serving


def test_awake_flags_are_distinct_bytes_of_the_shared_page() -> None:
    """Each mule its own byte of uWSGI's one-page shared area (uwsgi.ini: sharedarea = 1)."""
    mules = range(1, Settings().mules + 1)
    offsets = [awake_flag(mule) for mule in mules]
    assert len(set(offsets)) == len(offsets)
    assert all(0 <= offset < 4096 for offset in offsets)
    assert len({AWAKE, ASLEEP, NOT_SERVING, 0}) == 4  # 0: the mule has not said yet
    assert "sharedarea = 1" in (Path(__file__).resolve().parents[2] / "uwsgi.ini").read_text()
