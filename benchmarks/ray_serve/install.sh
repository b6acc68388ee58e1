#!/usr/bin/env bash
# Create benchmarks/.venv-ray (idempotent) with Ray Serve and the project's model dependencies.
#   benchmarks/ray_serve/install.sh            # PYTHON=python3.11 to choose the interpreter
# With uv (UV=path/to/uv, as `make bench-deps` passes, or a uv on PATH) the venv is made and filled by
# uv: Ray's wheels install in seconds from uv's cache instead of minutes with pip. Without, pip.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/../.venv-ray"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
uv="${UV:-$(command -v uv || true)}"
if [ ! -x "$venv/bin/python" ]; then
    if [ -n "$uv" ]; then
        UV_PYTHON_DOWNLOADS=never "$uv" venv --quiet --python "$python" "$venv"
    else
        "$python" -m venv "$venv"
    fi
fi
# -r ../../requirements.txt is relative to this directory.
cd "$here"
if "$venv/bin/python" - <<'PY' 2>/dev/null
import importlib.metadata as m, sys
want = {"ray": "2.60.0"}
for line in open("../../requirements.txt"):
    line = line.split("#")[0].strip()
    if "==" in line:
        name, version = line.split("==")
        want[name.strip()] = version.strip()
ok = all(m.version(n) == v for n, v in want.items())
import ray.serve, fastapi  # noqa: F401  (the [serve] extra)
sys.exit(0 if ok else 1)
PY
then
    echo "benchmarks/.venv-ray: up to date"
else
    if [ -n "$uv" ]; then
        "$uv" pip install --quiet --python "$venv/bin/python" -r requirements.txt
    else
        "$venv/bin/python" -m pip install -q -r requirements.txt
    fi
    echo "benchmarks/.venv-ray: installed"
fi
"$venv/bin/python" -c "import ray, lightgbm, numpy; print('ray', ray.__version__, 'lightgbm', lightgbm.__version__, 'numpy', numpy.__version__)"
