"""A local export of a tree with hardlinks: the link arrives before its target's data."""

from __future__ import annotations

import os
from pathlib import Path

from envd_core.buildkit import llb
from envd_core.buildkit.client import BuildkitClient
from envd_core.buildkit.exporters import Exporter
from envd_core.buildkit.session import ExportTarget, Session
from envd_core.buildkit.transport import connect_unix


def test_local_export_recreates_hardlinks(buildkit_unix: str, infra: dict, tmp_path: Path) -> None:
    state = llb.image(infra["IMAGE_BUSYBOX"]).run(
        [
            "/bin/sh",
            "-c",
            (
                "mkdir /out && head -c 300000 /dev/zero > /out/big && "
                "ln /out/big /out/link1 && ln /out/big /out/link2 && echo x > /out/small"
            ),
        ]
    ).root()
    dest = tmp_path / "export"
    with connect_unix(buildkit_unix, timeout=10) as connection:
        session = Session(shared_key="hardlink-test", export=ExportTarget.directory(dest))
        BuildkitClient(connection).solve(
            state.to_definition(), exporters=[Exporter("local", {})], session=session
        )
    big = dest / "out" / "big"
    assert big.stat().st_size == 300000
    for name in ("link1", "link2"):
        assert os.path.samefile(big, dest / "out" / name)
    assert (dest / "out" / "small").read_text() == "x\n"
