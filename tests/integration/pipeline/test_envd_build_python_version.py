"""install.python(version=...) gets the distribution's Python when it matches, else one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_envd_build_support import Envd, assert_one_error_line


def _project(directory: Path, image: str, version: str) -> Path:
    directory.mkdir()
    (directory / "build.envd").write_text(
        f'def build():\n    base(image="{image}")\n    install.python(version="{version}")\n'
    )
    return directory


def test_python_version_checked(tmp_path: Path, infra: dict[str, Any], docker_host: str,
                                ca_bundle: str, buildkit_unix: str) -> None:
    envd = Envd(tmp_path / "config", docker_host, ca_bundle)
    envd.run("context", "create", "--name", "u", "--builder", "unix", "--builder-address",
             buildkit_unix, "--use")
    # Debian bookworm packages Python 3.11: "3" matches, "3.9" does not
    ok = _project(tmp_path / "ok", infra["IMAGE_DEBIAN"], "3")
    envd.build(ok, "--output", f"type=tar,dest={tmp_path / 'ok.tar'}")
    bad = _project(tmp_path / "bad", infra["IMAGE_DEBIAN"], "3.9")
    proc = envd.build(bad, "--output", f"type=tar,dest={tmp_path / 'bad.tar'}", check=False)
    line = assert_one_error_line(proc)
    assert "Python 3.9" in line, line
    assert "install.python(version='3.9'): this image provides Python 3.11" in proc.stderr
