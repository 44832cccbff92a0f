"""A vendor's build.envd function, from a plugin, reaches `envd build` (graph and LLB)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from envd_core.testing import StubBuilder, StubRunner, make_plugin


def test_vendor_function_through_envd_build(cli: Any, register_plugin: Any, tmp_path: Path) -> None:
    def tensorrt(graph: Any, version: str = "10") -> None:
        graph.apt_packages.append(f"tensorrt-{version}")

    register_plugin(make_plugin(builders=[StubBuilder], runners=[StubRunner],
                                build_functions={"install.tensorrt": tensorrt}))
    created = cli("context", "create", "--name", "stub", "--builder", StubBuilder.name,
                  "--builder-address", "x", "--runner", StubRunner.name, "--use")
    assert created.exit_code == 0, created
    project = tmp_path / "project"
    project.mkdir()
    (project / "build.envd").write_text(
        'def build():\n    base(image="127.0.0.1:5000/debian:bookworm")\n'
        '    install.tensorrt(version="8")\n'
    )
    out = tmp_path / "out.llb"
    result = cli("build", "--path", str(project), "--dump-llb", str(out))
    assert result.exit_code == 0, result
    assert b"tensorrt-8" in out.read_bytes()
    # an unknown vendor function is one clear line naming the file and position
    (project / "build.envd").write_text('def build():\n    install.tensorrtt()\n')
    failed = cli("build", "--path", str(project), "--dump-llb", str(out))
    assert failed.exit_code == 1
    assert failed.stderr.startswith("envd: build.envd:2:")
    assert "tensorrt" in failed.stderr
