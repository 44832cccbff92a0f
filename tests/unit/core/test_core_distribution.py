"""The example distribution (docs/examples/acme-envd), installed with a real `pip install` into a
throwaway target directory, then driven through the installed `envd` script as a user would."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "docs" / "examples" / "acme-envd"


@pytest.fixture(scope="module")
def acme_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip install` of the example: no network (no deps, the venv's setuptools builds it)."""
    target = tmp_path_factory.mktemp("acme-site")
    # setuptools builds in the source tree (build/, *.egg-info): build a copy, never the repo
    source = tmp_path_factory.mktemp("acme-src") / "acme-envd"
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-index", "--target", str(target), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (target / "acme_envd" / "cli.py").is_file()
    return target


@pytest.fixture
def envd(acme_site: Path, envd_script: str, envd_config_dir: Path,
         tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(acme_site), *sys.path]),
           "ENVD_CONFIG_DIR": str(envd_config_dir),
           "ENVD_TEAM_CONTEXTS_DIR": str(tmp_path / "no-system-dir")}

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([envd_script, *args], env={**env, **extra}, capture_output=True,
                              text=True, timeout=120, check=False)

    return run


def test_installed_distribution_end_to_end(envd: Callable[..., subprocess.CompletedProcess[str]],
                                           tmp_path: Path) -> None:
    listed = envd("plugins", "ls")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[0] == "Distribution: Acme envd 2026.11.0 (plugin acme)"

    contexts = envd("context", "ls", "--format", "json")
    assert contexts.returncode == 0, contexts.stderr
    rows = {r["context"]: r for r in json.loads(contexts.stdout)}
    assert rows["acme-shared"]["origin"] == "plugin acme" and rows["acme-shared"]["current"]
    assert rows["acme-laptop"]["origin"] == "user" and "default" in rows

    info = envd("acme", "info", "--format", "json")
    assert info.returncode == 0, info.stderr
    data = json.loads(info.stdout)
    assert data["distribution"] == "Acme envd 2026.11.0"
    assert data["team_contexts"] == ["acme-shared"]

    project = tmp_path / "project"
    project.mkdir()
    (project / "build.envd").write_text('def build():\n    acme_base(flavour="python")\n')
    llb = tmp_path / "out.llb"
    built = envd("build", "--path", str(project), "--dump-llb", str(llb),
                 ACME_REGISTRY="127.0.0.1:5000")
    assert built.returncode == 0, built.stderr
    assert b"127.0.0.1:5000/python:3.11-bookworm" in llb.read_bytes()

    # disabling the distribution returns envd to stock behaviour
    assert envd("plugins", "disable", "acme").returncode == 0
    stock = envd("plugins", "ls")
    assert not stock.stdout.startswith("Distribution:")
    shown = envd("context", "show")
    assert shown.stdout == "default\t(from current context)\n"
    assert "no longer defined" in shown.stderr
    gone = envd("acme", "info")
    assert gone.returncode == 2 and "No such command 'acme'" in gone.stderr
    assert envd("plugins", "enable", "acme").returncode == 0
    assert envd("acme", "info").returncode == 0


def test_context_ls_does_not_import_the_distributions_commands(
        acme_site: Path, envd_config_dir: Path) -> None:
    code = ("import sys; from envd_core.cli import create_cli, run; "
            "code = run(create_cli(), ['context', 'ls']); "
            "assert 'acme_envd' in sys.modules, 'the plugin itself is loaded'; "
            "print(sorted(m for m in sys.modules if m.startswith('acme_envd')))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(acme_site), *sys.path]),
           "ENVD_CONFIG_DIR": str(envd_config_dir)}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "['acme_envd']"
