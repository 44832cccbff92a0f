"""``envd context ls`` stays light: no grpc, docker or kubernetes, with every plugin installed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

HEAVY = ("grpc", "docker", "kubernetes")

PROBE = """
    import json, os, sys
    from importlib import metadata
    from envd_core.cli import create_cli, run

    code = run(create_cli(), sys.argv[2:])
    eps = metadata.entry_points(group="envd")
    report = {
        "code": code,
        "heavy": sorted(m for m in sys.modules if m.split(".")[0] in %r),
        "plugins": {ep.name: ep.value.split(":")[0] in sys.modules for ep in eps},
    }
    with open(sys.argv[1], "w") as out:
        json.dump(report, out)
"""


def run_probe(tmp_path: Path, args: list[str]) -> dict[str, Any]:
    """Run the CLI main in a fresh interpreter, then report what it imported."""
    script = tmp_path / "probe.py"
    script.write_text(textwrap.dedent(PROBE % (HEAVY,)))
    report = tmp_path / "report.json"
    # ENVD_RESIDENT=0: what a fresh process imports is the point (docs/resident.md)
    env = {"ENVD_CONFIG_DIR": str(tmp_path / "cfg"), "PATH": "/usr/bin:/bin",
           "HOME": str(tmp_path), "ENVD_RESIDENT": "0"}
    done = subprocess.run([sys.executable, str(script), str(report), *args], env=env,
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(report.read_text())  # type: ignore[no-any-return]


@pytest.mark.parametrize("args", [["context", "ls"], ["context", "ls", "--format", "json"],
                                  ["context", "show"], ["--help"], ["context", "--help"]])
def test_light_commands_import_no_heavy_module(tmp_path, args):
    report = run_probe(tmp_path, args)
    assert report["code"] == 0
    assert report["heavy"] == [], f"`envd {' '.join(args)}` imported {report['heavy']}"


def test_context_ls_loaded_every_installed_plugin(tmp_path):
    """The check above is meaningful only if the installed plugins were really imported."""
    report = run_probe(tmp_path, ["context", "ls"])
    not_loaded = [name for name, loaded in report["plugins"].items() if not loaded]
    assert not_loaded == [], f"plugins not imported by `envd context ls`: {not_loaded}"

