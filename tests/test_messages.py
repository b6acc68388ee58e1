"""The worker-mule message format: round trips, sizes, and refusal of anything else."""

from __future__ import annotations

import os
from array import array
from pathlib import Path

import pytest

from forecast.messages import (
    ASLEEP,
    AWAKE,
    MAX_ADDRESS_BYTES,
    NOT_SERVING,
    NOTICE_CLAIMED,
    NOTICE_DONE,
    UWSGI_QUEUE_ITEM_HEADER_BYTES,
    Job,
    MessageError,
    Result,
    awake_flag,
    decode_notice,
    decode_reload,
    encode_notice,
    encode_reload,
    max_rows_per_job,
    max_rows_per_result,
    pack_rows,
)
from forecast.settings import Settings

ADDRESS = b"\0forecast-worker-" + b"a" * 24


def job(rows: int = 3, attempt: int = 1) -> Job:
    return Job(
        os.urandom(16), ADDRESS, 1.8e9, pack_rows([17000 + n for n in range(rows)], [1] * rows, [2] * rows), attempt
    )


def test_job_round_trip() -> None:
    original = job(attempt=2)
    decoded = Job.decode(original.encode())
    assert decoded == original
    assert decoded.row_count == 3
    assert decoded.key == original.id.hex()
    assert array("i", decoded.rows).tolist() == [17000, 1, 2, 17001, 1, 2, 17002, 1, 2]


def test_a_full_job_fits_one_queue_slot() -> None:
    longest_address = b"\0" + b"a" * (MAX_ADDRESS_BYTES - 1)
    for slot in (8192, 65536):
        rows = max_rows_per_job(slot)
        biggest = Job(b"i" * 16, longest_address, 0.0, pack_rows([1] * rows, [1] * rows, [1] * rows))
        assert len(biggest.encode()) + UWSGI_QUEUE_ITEM_HEADER_BYTES <= slot
        one_more = Job(b"i" * 16, longest_address, 0.0, pack_rows([1] * (rows + 1), [1] * (rows + 1), [1] * (rows + 1)))
        assert len(one_more.encode()) + UWSGI_QUEUE_ITEM_HEADER_BYTES > slot


def test_a_full_result_fits_one_cache_block() -> None:
    rows = max_rows_per_result(65536)
    result = Result(os.urandom(16), 2, 4242, "v" * 64, predictions=array("d", [1.5] * rows).tobytes())
    assert len(result.encode()) <= 65536


@pytest.mark.parametrize("damage", ["truncate", "magic", "extra"])
def test_damaged_jobs_are_refused(damage: str) -> None:
    data = job().encode()
    damaged = {"truncate": data[:-1], "magic": b"XX" + data[2:], "extra": data + b"\0"}[damage]
    with pytest.raises(MessageError):
        Job.decode(damaged)


def test_result_round_trips_predictions_and_errors() -> None:
    ok = Result(b"i" * 16, 1, 99, "v7", predictions=array("d", [1.25, 0.0, 31.7]).tobytes())
    decoded = Result.decode(ok.encode())
    assert decoded == ok
    assert decoded.ok
    assert decoded.sales() == [1.25, 0.0, 31.7]
    failed = Result(b"i" * 16, 2, 98, "v7", error="ValueError")
    assert Result.decode(failed.encode()) == failed
    assert not Result.decode(failed.encode()).ok
    with pytest.raises(MessageError):
        Result.decode(b"FR")
    with pytest.raises(MessageError):
        Result.decode(ok.encode()[:-3])


def test_notices_and_reload_messages() -> None:
    job_id = os.urandom(16)
    assert decode_notice(encode_notice(NOTICE_CLAIMED, job_id, 1234)) == (NOTICE_CLAIMED, job_id, 1234)
    assert decode_notice(encode_notice(NOTICE_DONE, job_id, 1)) == (NOTICE_DONE, job_id, 1)
    with pytest.raises(MessageError):
        decode_notice(b"X" + job_id + b"\0\0\0\0")
    assert decode_reload(encode_reload(job_id, ADDRESS, "v3", 12.5)) == (job_id, ADDRESS, "v3", 12.5)
    with pytest.raises(MessageError):
        decode_reload(b"R{not json")


def test_awake_flags_are_distinct_bytes_of_the_shared_page() -> None:
    """Each mule its own byte of uWSGI's one-page shared area (uwsgi.ini: sharedarea = 1)."""
    mules = range(1, Settings().mules + 1)
    offsets = [awake_flag(mule) for mule in mules]
    assert len(set(offsets)) == len(offsets)
    assert all(0 <= offset < 4096 for offset in offsets)
    assert len({AWAKE, ASLEEP, NOT_SERVING, 0}) == 4  # 0: the mule has not said yet
    assert "sharedarea = 1" in (Path(__file__).resolve().parent.parent / "uwsgi.ini").read_text()
