"""``import envd_core.buildkit`` (and its pure modules) must not load grpc or protobuf."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "module",
    [
        "envd_core.buildkit",
        "envd_core.buildkit.transport",
        "envd_core.buildkit.client",
        "envd_core.buildkit.llb",
        "envd_core.buildkit.progress",
        "envd_core.buildkit.exporters",
    ],
)
def test_import_does_not_load_grpc(module: str) -> None:
    code = (
        f"import sys, {module}\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'google', 'rich'))\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_lazy_reexport() -> None:
    import envd_core.buildkit as bk

    assert bk.BuildkitClient.__name__ == "BuildkitClient"
    assert bk.image("busybox").output is not None
    with pytest.raises(AttributeError):
        bk.does_not_exist  # noqa: B018


def test_every_reexported_name_resolves() -> None:
    import envd_core.buildkit as bk

    for name in bk.__all__:
        assert getattr(bk, name) is not None, name
