"""``install.vscode_extensions`` built for real: ``envd build`` fetches the extension from an
Open VSX-compatible gallery on 127.0.0.1 (ENVD_VSCODE_GALLERY) and the image holds it where VS
Code Server looks (``/home/envd/.vscode-server/extensions``)."""

from __future__ import annotations

import json
import sys
import tarfile
from pathlib import Path

import pytest
from test_envd_build_support import Envd, marker

sys.path.insert(0, str(Path(__file__).parents[2] / "unit" / "envdfile"))
from vsx_gallery import gallery

pytestmark = pytest.mark.integration


@pytest.fixture
def envd(tmp_path: Path, docker_host: str, ca_bundle: str, buildkit_tcp: str) -> Envd:
    cli = Envd(tmp_path / "config", docker_host, ca_bundle)
    cli.run("context", "create", "--name", "tcp-vsx", "--builder", "tcp", "--builder-address",
            buildkit_tcp, "--use")
    return cli


def test_extension_lands_in_the_dev_image(envd: Envd, tmp_path: Path, registry: str,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    mark = marker()
    project = tmp_path / f"vsx{mark}"
    project.mkdir()
    (project / "build.envd").write_text(
        "def build():\n"
        f'    base(image="{registry}/debian:bookworm", dev=True)\n'
        f'    install.vscode_extensions(name=["envdtest.hello{mark}"])\n')
    monkeypatch.setenv("ENVD_VSCODE_CACHE", str(tmp_path / "vsx-cache"))
    dest = tmp_path / "rootfs.tar"
    with gallery({("envdtest", f"hello{mark}"): "1.2.3"}) as (url, seen):
        monkeypatch.setenv("ENVD_VSCODE_GALLERY", url)
        envd.build(project, "--output", f"type=tar,dest={dest}")
    assert any(s.startswith(f"/api/envdtest/hello{mark}/latest") for s in seen)
    with tarfile.open(dest) as tar:
        member = tar.extractfile(
            f"home/envd/.vscode-server/extensions/envdtest.hello{mark}/package.json")
        assert member is not None
        manifest = json.loads(member.read())
    assert manifest["version"] == "1.2.3" and manifest["name"] == f"hello{mark}"
