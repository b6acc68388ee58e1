"""The alert rules: valid, and each one's unit test in alerts.test.yml passes (promtool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "monitoring" / "prometheus"


def binary(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is needed (Debian: apt-get install prometheus; `make test` installs it)"
    return path


def test_alert_rules_are_valid_and_pass_their_unit_tests() -> None:
    promtool = binary("promtool")
    for command in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts.test.yml"]):
        result = subprocess.run([promtool, *command], cwd=PROMETHEUS_DIR, capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr
