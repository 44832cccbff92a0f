"""An export this side cannot write fails fast, with this side's reason (not a bare EOF)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from envd_core.buildkit import llb
from envd_core.buildkit.client import BuildkitClient
from envd_core.buildkit.exporters import Exporter
from envd_core.buildkit.session import ExportTarget, Session
from envd_core.buildkit.transport import connect_unix
from envd_core.errors import BuildError


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs: writing a bigger export into it fails with ENOSPC."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1M", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("kind", ["local", "tar"])
def test_export_into_full_disk_fails_with_reason(
    kind: str, buildkit_unix: str, infra: dict, tiny_disk: Path
) -> None:
    state = llb.image(infra["IMAGE_BUSYBOX"]).run(
        ["/bin/sh", "-c", "mkdir -p /big && head -c 3000000 /dev/urandom > /big/blob"]
    ).root()
    target = (
        ExportTarget.directory(tiny_disk / "out") if kind == "local"
        else ExportTarget.file(tiny_disk / "out.tar")
    )
    session = Session(shared_key="enospc-test", export=target)
    started = time.monotonic()
    with connect_unix(buildkit_unix, timeout=10) as connection, pytest.raises(BuildError) as info:
        BuildkitClient(connection).solve(
            state.to_definition(), exporters=[Exporter(kind, {})], session=session
        )
    assert time.monotonic() - started < 60  # it used to wait forever
    assert session.export_errors, "this side's reason was not recorded"
    assert "No space left on device" in session.export_errors[0]
    assert "export" in str(info.value).lower()
