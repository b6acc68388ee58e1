"""Settings: the docs' table (docs/operating.md) documents every variable, uwsgi.ini reads what is exported."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from serving.nginx_conf import upstream_read_timeout_s
from serving.settings import UWSGI_FIELDS, Settings, check_deadline, check_uwsgi_ini, mules_in_ini

ROOT = Path(__file__).resolve().parents[2]


def documented_settings() -> dict[str, str]:
    page = ROOT / "docs" / "operating.md"
    rows = re.findall(r"^\| `(FORECAST_[A-Z_]+)` \| (.+?) \|", page.read_text(), re.M)
    return {name: default.strip("`") for name, default in rows}


def test_docs_table_lists_every_setting_with_its_default() -> None:
    documented = documented_settings()
    for name, field in Settings.model_fields.items():
        variable = f"FORECAST_{name.upper()}"
        assert variable in documented, f"{variable} missing from the settings table of docs/operating.md"
        default = "(unset)" if field.default is None else str(field.default)
        assert documented[variable] == default, variable
    assert len(documented) == len(Settings.model_fields)


def test_uwsgi_ini_reads_every_exported_size_and_the_mule_count_matches() -> None:
    ini = (ROOT / "uwsgi.ini").read_text()
    for name in UWSGI_FIELDS:
        assert f"$(FORECAST_{name.upper()})" in ini
    mule_ids = re.search(r"^for = ([\d ]+)$", ini, re.M)
    assert mule_ids is not None
    assert len(mule_ids.group(1).split()) == Settings().mules


def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FORECAST_DEADLINE_MS", "soon")
    with pytest.raises(ValidationError, match="deadline_ms"):
        Settings()
    monkeypatch.setenv("FORECAST_DEADLINE_MS", "100")
    monkeypatch.setenv("FORECAST_QUEUE_SLOTS", "300")
    with pytest.raises(ValidationError, match="FORECAST_RESULT_CACHE_ITEMS"):
        Settings()


def test_each_worker_gets_a_share_of_the_queue() -> None:
    settings = Settings(queue_slots=128, uwsgi_processes=2)
    assert settings.jobs_in_flight_per_worker * settings.uwsgi_processes < settings.queue_slots


def test_a_uwsgi_ini_that_starts_another_number_of_mules_stops_the_start(tmp_path: Path) -> None:
    ini = tmp_path / "uwsgi.ini"
    ini.write_text("[uwsgi]\nfor = 1 2 3\nmule = mules/main.py\nendfor =\n")
    assert mules_in_ini(ini.read_text()) == 3
    with pytest.raises(ValueError, match="starts 3 mules but FORECAST_MULES is 2"):
        check_uwsgi_ini(Settings(), ini)
    check_uwsgi_ini(Settings(mules=3), ini)
    assert mules_in_ini("[uwsgi]\nmule = a.py\nmule = b.py\n") == 2
    exported = subprocess.run([sys.executable, "-m", "serving.settings", "--ini", str(ini)], capture_output=True,
                              text=True, check=False, cwd=ROOT)  # fmt: skip
    assert exported.returncode == 1
    assert "FORECAST_MULES is 2" in exported.stderr
    assert exported.stdout == ""  # nothing for prestart.sh to eval


def test_a_deadline_not_below_harakiri_and_nginxs_read_timeout_stops_the_start(tmp_path: Path) -> None:
    """A worker waiting past harakiri is killed, and past nginx's read timeout cut off, instead of answering 504."""
    conf = ROOT / "nginx.conf"
    assert upstream_read_timeout_s(conf.read_text()) == 300  # the nginx.conf served, locally and in the image
    check_deadline(Settings(), conf)  # 5 s, below 60 s and 300 s
    check_deadline(Settings(deadline_ms=59_999), conf)
    for deadline_ms in (60_000, 90_000):  # at harakiri is not below it
        with pytest.raises(ValueError, match="must be below both") as refused:
            check_deadline(Settings(deadline_ms=deadline_ms), conf)
        message = str(refused.value)
        assert f"FORECAST_DEADLINE_MS={deadline_ms} ({deadline_ms // 1000} s)" in message
        assert "FORECAST_WORKER_HARAKIRI_S=60" in message
        assert f"uwsgi_read_timeout (300 s, in {conf})" in message
    short = tmp_path / "nginx.conf"  # nginx's timeout binds too, with harakiri out of the way
    short.write_text("location / {\n    uwsgi_pass unix:/tmp/s;\n    uwsgi_read_timeout 30s;\n}\n")
    check_deadline(Settings(deadline_ms=29_000, worker_harakiri_s=600), short)
    with pytest.raises(ValueError, match=r"FORECAST_WORKER_HARAKIRI_S=600 .* uwsgi_read_timeout \(30 s"):
        check_deadline(Settings(deadline_ms=45_000, worker_harakiri_s=600), short)
    assert upstream_read_timeout_s("http {\n}\n") == 60  # none set: nginx's default
    assert upstream_read_timeout_s("    uwsgi_read_timeout 2m;\n    uwsgi_read_timeout 90;\n") == 90  # the shortest
    command = [sys.executable, "-m", "serving.settings", "--ini", str(ROOT / "uwsgi.ini"), "--nginx-conf", str(conf)]
    env = {**os.environ, "FORECAST_DEADLINE_MS": "90000"}
    exported = subprocess.run(command, capture_output=True, text=True, check=False, cwd=ROOT, env=env)
    assert exported.returncode == 1
    assert (
        "error: FORECAST_DEADLINE_MS=90000 (90 s) must be below both FORECAST_WORKER_HARAKIRI_S=60" in exported.stderr
    )
    assert exported.stdout == ""  # nothing for prestart.sh to eval
