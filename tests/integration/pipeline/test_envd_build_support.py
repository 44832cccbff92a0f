"""Shared helpers for the ``envd build`` end-to-end tests (this module holds no tests).

Every test drives the real ``envd`` console script in a subprocess with its own
``ENVD_CONFIG_DIR``, against the daemons ``scripts/infra`` runs (see the top-level conftest).
The environment under test is written fresh into a temp directory per test, with a unique
marker so that a step meant to be rebuilt can never be satisfied by an earlier run's cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The project's own CLI, from the venv running pytest (never upstream's Go `envd`).
ENVD = str(Path(sys.executable).with_name("envd"))
#: Vertex names that are sources or exporters: BuildKit never marks these CACHED.
NON_STEP_PREFIXES = ("docker-image://", "local://", "exporting", "importing cache",
                     "pushing", "[auth]", "resolve image config", "writing image", "naming to")
APT_PACKAGE = "jq"
PIP_PACKAGE = "six"


def marker() -> str:
    """A short unique token for image names and file contents."""
    return uuid.uuid4().hex[:12]


def write_environment(directory: Path, *, mark: str, registry: str, run_line: str = "",
                      extra: str = "") -> Path:
    """Write a self-contained build context: build.envd plus a file that ``io.copy`` ships.

    The environment uses every feature the seed scenario covers: an image base from the local
    registry, an apt package, a pip package, environment variables, a copied file and an
    entrypoint. ``run_line`` / ``extra`` add lines at the end of ``build()``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "data").mkdir(exist_ok=True)
    (directory / "data" / "marker.txt").write_text(f"copied {mark}\n")
    (directory / "data" / "show.py").write_text(textwrap.dedent("""\
        import os
        import six
        print("E2E_MARK=" + os.environ.get("E2E_MARK", "") + " six=" + six.__version__)
        """))
    body = [
        f'base(image="{registry}/python:3.11-bookworm", dev=False)',
        "install.python()",
        f'install.apt_packages(name=["{APT_PACKAGE}"])',
        f'install.python_packages(name=["{PIP_PACKAGE}"])',
        f'runtime.environ(env={{"E2E_MARK": "{mark}", "E2E_SECOND": "two words"}})',
        'io.copy(source="data/marker.txt", target="/opt/e2e/marker.txt")',
        'io.copy(source="data/show.py", target="/opt/e2e/show.py")',
        'config.entrypoint(["python3", "/opt/e2e/show.py"])',
    ]
    if run_line:
        body.append(run_line)
    if extra:
        body.append(extra)
    text = "# syntax=v1\n\ndef build():\n" + "".join(f"    {line}\n" for line in body)
    (directory / "build.envd").write_text(text)
    return directory


@dataclass
class Envd:
    """Runs the ``envd`` CLI with a private config directory and the infra's Docker."""

    config_dir: Path
    docker_host: str
    ca_bundle: str
    calls: list[list[str]] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        """Subprocess environment: isolated config, no inherited progress/CA overrides."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("BUILDKIT_PROGRESS", "ENVD_CA_BUNDLE", "ENVD_CONTEXT")}
        env["ENVD_CONFIG_DIR"] = str(self.config_dir)
        env["DOCKER_HOST"] = self.docker_host
        env["NO_COLOR"] = "1"
        return env

    def run(self, *args: str, cwd: Path | None = None, timeout: float = 600,
            check: bool = True) -> subprocess.CompletedProcess[str]:
        """``envd ARGS``; with ``check`` a non-zero exit fails with the full output shown."""
        argv = [ENVD, *args]
        self.calls.append(argv)
        proc = subprocess.run(argv, check=False, cwd=cwd, env=self.env(), capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"`{' '.join(argv)}` exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                f"\n--- stderr\n{proc.stderr[-6000:]}"
            )
        return proc

    def build(self, context: Path, *args: str, progress: str = "json",
              check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """``envd build`` in ``context`` with the host CA bundle (pip needs it here)."""
        return self.run("build", "--progress", progress, "--ca-bundle", self.ca_bundle, *args,
                        cwd=context, check=check, timeout=timeout)


def docker(*args: str, docker_host: str, timeout: float = 300,
           check: bool = True, stdin: Any = None) -> subprocess.CompletedProcess[str]:
    """The ``docker`` CLI against the infra's dockerd."""
    env = dict(os.environ, DOCKER_HOST=docker_host)
    proc = subprocess.run(["docker", *args], check=False, env=env, capture_output=True, text=True,
                          timeout=timeout, stdin=stdin)
    if check and proc.returncode != 0:
        raise AssertionError(f"`docker {' '.join(args)}` exited {proc.returncode}: "
                             f"{proc.stderr.strip()[-2000:]}")
    return proc


def remove_images(docker_host: str, *refs: str) -> None:
    """Best-effort cleanup so repeated runs do not fill dockerd's store."""
    if shutil.which("docker") is None:
        return
    docker("rmi", "-f", *refs, docker_host=docker_host, check=False)


@dataclass
class Vertex:
    """One vertex of a build, folded from ``--progress json`` events."""

    digest: str
    name: str
    cached: bool = False
    completed: bool = False
    error: str | None = None


def vertices(stderr: str) -> list[Vertex]:
    """Fold the JSON progress lines of ``stderr`` into vertices (first-seen order)."""
    seen: dict[str, Vertex] = {}
    for line in stderr.splitlines():
        if not line.startswith("{"):
            continue
        event = json.loads(line)
        if event.get("type") != "vertex":
            continue
        v = seen.setdefault(event["digest"], Vertex(event["digest"], event["name"]))
        v.name = event["name"] or v.name
        v.cached = v.cached or bool(event["cached"])
        v.completed = v.completed or event["completed"] is not None
        v.error = event["error"] or v.error
    return list(seen.values())


def build_steps(stderr: str) -> list[Vertex]:
    """Vertices that are build steps (exec/file ops), not sources or exporters."""
    return [v for v in vertices(stderr) if not v.name.startswith(NON_STEP_PREFIXES)]


def assert_one_error_line(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """A user mistake: exit 1 or 2, one ``envd: …`` line on stderr, no traceback."""
    assert proc.returncode in (1, 2), (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("envd: ")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def check_image_contents(image: str, mark: str, *, docker_host: str,
                         base_image: str | None = None) -> None:
    """Run ``image`` and check what the environment declared is really there.

    With ``base_image``, also check that the CA bundle pip used during the build (the host's,
    served as a secret) did not end up in the image: its bundle is still the base image's.
    """
    # The entrypoint: imports the pip package and prints the declared env.
    out = docker("run", "--rm", image, docker_host=docker_host).stdout
    assert f"E2E_MARK={mark}" in out, out
    assert "six=" in out, out
    probe = ("set -e; command -v jq; jq --version; cat /opt/e2e/marker.txt; "
             "python3 -c 'import six; print(\"six-ok\", six.__file__)'; "
             "echo \"second=$E2E_SECOND\"")
    out = docker("run", "--rm", "--entrypoint", "/bin/sh", image, "-c", probe,
                 docker_host=docker_host).stdout
    assert "/usr/bin/jq" in out and "jq-" in out, out
    assert f"copied {mark}" in out, out
    assert "six-ok /opt/envd/venv/" in out, out
    assert "second=two words" in out, out
    if base_image is not None:
        show = ["run", "--rm", "--entrypoint", "/bin/cat"]
        bundle = ["/etc/ssl/certs/ca-certificates.crt"]
        built = docker(*show, image, *bundle, docker_host=docker_host).stdout
        base = docker(*show, base_image, *bundle, docker_host=docker_host).stdout
        assert built == base, "the CA bundle in the image is not the base image's"
        # Mount points may stay behind as empty directories (dockerd's BuildKit v0.8 leaves
        # /run/envd), but no file from a secret or bind mount may.
        left = docker("run", "--rm", "--entrypoint", "/bin/sh", image, "-c",
                      "find /run/envd ! -type d 2>/dev/null; true",
                      docker_host=docker_host).stdout
        assert left.strip() == "", left


def check_image_config(image: str, mark: str, *, docker_host: str) -> dict[str, Any]:
    """``docker inspect``: env, entrypoint and ``ai.tensorchord.envd.*`` labels as declared."""
    raw = docker("inspect", "--type", "image", image, docker_host=docker_host).stdout
    config = json.loads(raw)[0]["Config"]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["E2E_MARK"] == mark, env
    assert env["E2E_SECOND"] == "two words", env
    assert env["PATH"].startswith("/opt/envd/venv/bin:"), env
    assert config["Entrypoint"] == ["python3", "/opt/e2e/show.py"], config
    labels = config.get("Labels") or {}
    assert labels.get("ai.tensorchord.envd.vendor") == "envd", labels
    assert labels.get("ai.tensorchord.envd.syntax.version") == "v1", labels
    assert json.loads(labels["ai.tensorchord.envd.apt.packages"]) == [APT_PACKAGE], labels
    assert "ai.tensorchord.envd.build.digest" in labels, labels
    runtime = json.loads(labels["ai.tensorchord.envd.graph.runtime"])
    assert runtime["environ"]["E2E_MARK"] == mark, runtime
    return config
