"""install.python(version=...) on an image that ships that version: its Python, in a venv.

Another version is installed with micromamba as upstream does (its image and channel are not
reachable here: covered at the LLB level in tests/unit/envdfile/test_envdfile_python_version.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_envd_build_support import Envd


def _project(directory: Path, image: str, version: str) -> Path:
    directory.mkdir()
    (directory / "build.envd").write_text(
        f'def build():\n    base(image="{image}")\n    install.python(version="{version}")\n'
    )
    return directory


def test_python_version_the_image_has(tmp_path: Path, infra: dict[str, Any], docker_host: str,
                                      ca_bundle: str, buildkit_unix: str) -> None:
    envd = Envd(tmp_path / "config", docker_host, ca_bundle)
    envd.run("context", "create", "--name", "u", "--builder", "unix", "--builder-address",
             buildkit_unix, "--use")
    # Debian bookworm packages Python 3.11: "3" (upstream: 3.11) and "3.11" use it
    for version in ("3", "3.11"):
        ok = _project(tmp_path / f"ok{version}", infra["IMAGE_DEBIAN"], version)
        dest = tmp_path / f"out{version}"
        envd.build(ok, "--output", f"type=local,dest={dest}/rootfs")
        assert (dest / "rootfs/opt/envd/venv/bin/python3").exists()
        assert list((dest / "rootfs/usr/lib").glob("python3.11"))
