#!/usr/bin/env bash
# Create benchmarks/.venv-ray (idempotent) with Ray Serve and the project's model dependencies.
#   benchmarks/ray_serve/install.sh            # PYTHON=python3.11 to choose the interpreter
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/../.venv-ray"
python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null || python=python3
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
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
    "$venv/bin/python" -m pip install -q -r requirements.txt
    echo "benchmarks/.venv-ray: installed"
fi
"$venv/bin/python" -c "import ray, lightgbm, numpy; print('ray', ray.__version__, 'lightgbm', lightgbm.__version__, 'numpy', numpy.__version__)"
