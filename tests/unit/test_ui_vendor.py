"""The planner page's chart library is taken only as the npm registry published it."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from app.ui import vendor


def tarball(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        for name, data in files.items():
            member = tarfile.TarInfo(name)
            member.size = len(data)
            archive.addfile(member, io.BytesIO(data))
    return out.getvalue()


PACKAGE = {member: f"contents of {name}".encode() for member, name in vendor.FILES.items()}


def test_the_published_package_is_unpacked_with_its_version_stamp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tarball(PACKAGE)
    monkeypatch.setattr(vendor, "INTEGRITY", vendor.integrity_of(data))
    vendor.unpack(data, tmp_path)
    assert (tmp_path / "uPlot.iife.min.js").read_bytes() == b"contents of uPlot.iife.min.js"
    assert (tmp_path / "VERSION").read_text() == f"uplot {vendor.VERSION}\n"


def test_bytes_that_are_not_the_published_package_write_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tarball(PACKAGE)
    monkeypatch.setattr(vendor, "INTEGRITY", vendor.integrity_of(data))
    with pytest.raises(ValueError, match="not the published package"):
        vendor.unpack(tarball({**PACKAGE, "package/dist/uPlot.iife.min.js": b"alert('changed')"}), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_the_pinned_hash_is_npm_s_sha512_form() -> None:
    assert vendor.INTEGRITY.startswith("sha512-")
    empty = "sha512-z4PhNX7vuL3xVChQ1m2AB9Yg5AULVxXcg/SpIdNs6c5H0NE8XYXysP+DGNKHfuwvY7kxvUdBeoGlODJ6+SfaPg=="
    assert vendor.integrity_of(b"") == empty
