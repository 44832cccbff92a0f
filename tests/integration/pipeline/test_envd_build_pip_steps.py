"""Real builds: pip options inside python_packages entries, one pip step per call, in order.

Upstream envd v1.3.4 runs ``python -m pip install <entries>`` once per
``install.python_packages`` call, split into words. A file that passes pip options inside an
entry (``"six==1.15.0 --index-url URL"``) must build, and a later call must run after an earlier
one: the second call's pin wins in the image.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_envd_build_support import Envd, build_steps, docker, marker, remove_images

BUILD_FILE = """\
# syntax=v1
def build():
    base(image="{registry}/python:3.11-bookworm", dev=False)
    install.python()
    install.python_packages(name=["six==1.15.0 --index-url https://pypi.org/simple",
                                  "--prefer-binary"])
    install.python_packages(name=["six==1.16.0", "attrs==23.2.0 --no-deps"])
    runtime.environ(env={{"MARK": "{mark}"}})
    config.entrypoint([
        "python3", "-c",
        "import six, attrs; print('six', six.__version__, 'attrs', attrs.__version__)",
    ])
"""


def _inputs(stderr: str) -> dict[str, tuple[str, set[str]]]:
    """Vertex name -> (digest, input digests), from ``--progress json``."""
    found: dict[str, tuple[str, set[str]]] = {}
    for line in stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("type") == "vertex" and event.get("name"):
                found[event["name"]] = (event["digest"], set(event.get("inputs") or []))
    return found


@pytest.fixture
def envd(tmp_path: Path, docker_host: str, ca_bundle: str, buildkit_tcp: str) -> Envd:
    """The CLI on the shared tcp builder."""
    cli = Envd(tmp_path / "config", docker_host, ca_bundle)
    cli.run("context", "create", "--name", "tcp-pip", "--builder", "tcp",
            "--builder-address", buildkit_tcp, "--use")
    return cli


def test_pip_options_in_entries_and_one_step_per_call(envd: Envd, tmp_path: Path,
                                                      registry: str, docker_host: str) -> None:
    mark = marker()
    context = tmp_path / "pipsteps"
    context.mkdir()
    (context / "build.envd").write_text(BUILD_FILE.format(registry=registry, mark=mark))
    tag = f"e2e-pip-{mark}:dev"
    try:
        proc = envd.build(context, "--tag", tag)
        first = "pip install six==1.15.0 --index-url https://pypi.org/simple --prefer-binary"
        second = "pip install six==1.16.0 attrs==23.2.0 --no-deps"
        pips = {v.name for v in build_steps(proc.stderr) if v.name.startswith("pip install")}
        assert pips == {first, second}, pips
        # two steps, the second built on the first's result (progress order is not exec order)
        inputs = _inputs(proc.stderr)
        assert inputs[first][0] in inputs[second][1], inputs
        out = docker("run", "--rm", tag, docker_host=docker_host).stdout
        # the second call ran after the first: its pin is the one installed
        assert out.strip() == "six 1.16.0 attrs 23.2.0", out
        labels = json.loads(docker("inspect", "--type", "image", tag,
                                   docker_host=docker_host).stdout)[0]["Config"]["Labels"]
        # the pypi label keeps the entries as written, flattened (upstream's label)
        assert json.loads(labels["ai.tensorchord.envd.pypi.commands"]) == [
            "six==1.15.0 --index-url https://pypi.org/simple", "--prefer-binary",
            "six==1.16.0", "attrs==23.2.0 --no-deps"]
    finally:
        remove_images(docker_host, tag)


def test_an_unsplittable_entry_is_one_line_with_its_position(envd: Envd,
                                                             tmp_path: Path) -> None:
    context = tmp_path / "badquote"
    context.mkdir()
    (context / "build.envd").write_text(
        'def build():\n    install.python_packages(name=["six \\"unclosed"])\n')
    proc = envd.build(context, check=False)
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("envd: ")]
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "build.envd:2:5: `install.python_packages`" in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
