"""The planner page's chart library, uPlot, from its pinned npm package: ``python app/ui/vendor.py``.

uPlot (MIT) is 51 KB minified and draws bands between two series natively; Chart.js (213 KB) and
the Plotly bundle (4.8 MB) were the others considered (docs/planning.md says why).  The package's
tarball is fetched from the npm registry (no Node needed), checked against the integrity hash the
registry published for this version, and its two files and licence are written to
``app/ui/static/vendor/`` (not committed: ``make venv`` and the Docker build run this, as a script: it
needs nothing but the standard library).  Run again,
it does nothing while the files of this version are there.
"""

from __future__ import annotations

import base64
import hashlib
import io
import sys
import tarfile
import urllib.request
from pathlib import Path

PACKAGE, VERSION = "uplot", "1.6.32"
TARBALL = f"https://registry.npmjs.org/{PACKAGE}/-/{PACKAGE}-{VERSION}.tgz"
INTEGRITY = "sha512-KIMVnG68zvu5XXUbC4LQEPnhwOxBuLyW1AHtpm6IKTXImkbLgkMy+jabjLgSLMasNuGGzQm/ep3tOkyTxpiQIw=="
FILES = {"package/dist/uPlot.iife.min.js": "uPlot.iife.min.js", "package/dist/uPlot.min.css": "uPlot.min.css",
         "package/LICENSE": "LICENSE"}  # fmt: skip
# Beside this file, not through app.ui: run as a script (make, the Docker build), it imports nothing of the app.
FOLDER = Path(__file__).resolve().parent / "static" / "vendor"
STAMP = FOLDER / "VERSION"


def integrity_of(data: bytes) -> str:
    """npm's ``dist.integrity`` form of ``data``: ``sha512-`` and the base64 digest."""
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def unpack(data: bytes, folder: Path) -> None:
    """Write :data:`FILES` of the tarball ``data`` into ``folder``; ``ValueError`` when one is missing or the bytes
    are not the published package (its integrity hash)."""
    if integrity_of(data) != INTEGRITY:
        raise ValueError(f"{TARBALL}: not the published package (integrity {integrity_of(data)[:30]}...)")
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member, name in FILES.items():
            found = archive.extractfile(member)
            if found is None:
                raise ValueError(f"{TARBALL}: no {member}")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / name).write_bytes(found.read())
    (folder / STAMP.name).write_text(f"{PACKAGE} {VERSION}\n")


def main() -> int:
    if STAMP.exists() and STAMP.read_text().split() == [PACKAGE, VERSION]:
        return 0
    with urllib.request.urlopen(TARBALL, timeout=60) as response:
        data = response.read()
    unpack(data, FOLDER)
    print(f"{PACKAGE} {VERSION} -> {FOLDER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
