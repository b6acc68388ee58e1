"""The Dockerfile: hadolint passes, the base is pinned to a dated tag, the image's conventions are kept."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent


def dockerfile_instructions(path: Path) -> list[tuple[str, list[str]]]:
    """(INSTRUCTION, shell-split arguments) per instruction, continuation lines joined."""
    text = path.read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split()[0].upper(), shlex.split(line)[1:]) for line in lines]


def test_hadolint_passes() -> None:
    result = subprocess.run(
        [str(VENV_BIN / "hadolint"), str(ROOT / "Dockerfile")], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_pins_a_dated_base_and_keeps_the_image_conventions() -> None:
    instructions = dockerfile_instructions(ROOT / "Dockerfile")
    base = next(args[0] for name, args in instructions if name == "FROM")
    assert base.startswith("tiangolo/uwsgi-nginx-flask:python3.11-20")
    env = dict(arg.split("=", 1) for name, args in instructions if name == "ENV" for arg in args)
    assert env["OMP_NUM_THREADS"] == "1"
    assert env["UWSGI_CHEAPER"] == "0"
    assert any(name == "HEALTHCHECK" and "/status" in " ".join(args) for name, args in instructions)
    copies = [i for i, (name, _) in enumerate(instructions) if name == "COPY"]
    installs = [i for i, (name, args) in enumerate(instructions) if name == "RUN" and "pip" in args[0]]
    assert instructions[copies[0]][1][0] == "requirements.txt"
    assert installs[0] < copies[1], "dependencies must be installed before the code is copied"


def test_the_image_installs_with_the_uv_the_makefile_pins() -> None:
    """One uv version for the virtualenvs and the image: a bump in one place fails here until both agree."""
    makefile = re.search(r"^UV_VERSION := (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    assert makefile is not None
    installs = [" ".join(args) for name, args in dockerfile_instructions(ROOT / "Dockerfile") if name == "RUN"]
    assert re.findall(r"\buv==(\S+)", " ".join(installs)) == [makefile[1]]
