"""A failing ``envd build`` says what failed once, readably, with the fix: one real build per
recognised cause (issue 18).

Each build runs with ``--progress plain --format json``: stderr is what a user reads (the step's
log, one ``#N ERROR`` line, then exactly one ``envd:`` and one ``hint:`` line), stdout is what CI
reads (``{"error": {...}}``). Both must say the same thing, and no line may carry an escaped
line break.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_envd_build_support import Envd, marker

PYTHON = "python3:3.11-bookworm"
CA_HINT = ("hint: a proxy or a private CA is probably intercepting HTTPS: give the build its CA "
           "with `envd build --ca-bundle /etc/ssl/certs/ca-certificates.crt` (or once per "
           "context: `envd context update NAME --builder-opt ca-bundle=PATH`)")


class _Envd(Envd):
    docker_config: Path | None = None

    def env(self) -> dict[str, str]:
        env = super().env()
        if self.docker_config is not None:
            env["DOCKER_CONFIG"] = str(self.docker_config)
        return env


@pytest.fixture
def envd(tmp_path: Path, docker_host: str, ca_bundle: str, buildkit_tcp: str) -> _Envd:
    """The CLI on the shared tcp buildkitd, with an empty docker config (no credentials)."""
    cli = _Envd(tmp_path / "config", docker_host, ca_bundle)
    cli.docker_config = tmp_path / "docker-config"
    cli.docker_config.mkdir()
    cli.run("context", "create", "--name", "fail", "--builder", "tcp", "--builder-address",
            buildkit_tcp, "--use")
    return cli


def _context(directory: Path, *body: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    text = "# syntax=v1\n\ndef build():\n" + "".join(f"    {line}\n" for line in body)
    (directory / "build.envd").write_text(text)
    return directory


def _fail(envd: Envd, context: Path, *extra: str, progress: str = "plain"
          ) -> tuple[list[str], dict[str, Any]]:
    """Build, expect failure; return stderr's lines and stdout's ``error`` object."""
    proc = envd.run("build", "--progress", progress, "--format", "json", *extra, "--output",
                    f"type=tar,dest={context / 'out.tar'}", cwd=context, check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    for line in lines + proc.stdout.splitlines():
        assert "\\n" not in line or line.startswith("{"), f"escaped line break in: {line[:200]}"
    # Exactly one envd: and one hint: line, the last two, and the hint is no log.
    assert [i for i, line in enumerate(lines) if line.startswith("envd: ")] == [len(lines) - 2]
    assert [i for i, line in enumerate(lines) if line.startswith("hint: ")] == [len(lines) - 1]
    error = json.loads(proc.stdout)["error"]
    assert lines[-2] == f"envd: {error['message']}"
    assert lines[-1] == f"hint: {error['hint']}"
    assert "\n" not in error["hint"] and len(error["hint"]) < 300
    return lines, error


def _assert_step_report(lines: list[str], error: dict[str, Any], step: str) -> None:
    """The plain view named the step, showed its log as real lines, then one short ERROR line."""
    number = next(line.split()[0] for line in lines if line.endswith(f" {step}"))
    errors = [line for line in lines if line.startswith(f"{number} ERROR: ")]
    assert len(errors) == 1 and "/bin/sh" not in errors[0], errors
    assert error["step"] == step and error["stage"] == "step" and error["exit_code"] == 1
    shown = [line.split(" ", 2)[2] for line in lines
             if line.startswith(f"{number} ") and len(line.split(" ", 2)) == 3]
    assert error["log_tail"] and all(line in shown for line in error["log_tail"])
    assert len(error["log_tail"]) <= 10  # --log-lines default
    assert lines.index(errors[0]) < len(lines) - 2


def test_tls_interception_without_ca_bundle(envd: _Envd, tmp_path: Path, registry: str) -> None:
    """pip behind the intercepting proxy, no --ca-bundle: the hint is --ca-bundle."""
    context = _context(tmp_path / "env", f'base(image="{registry}/python:3.11-bookworm", '
                       'dev=False)', "install.python()", 'install.python_packages(name=["six"])')
    lines, error = _fail(envd, context, "--log-lines", "4")
    assert lines[-2] == ("envd: step `pip install six` failed with exit code 1: "
                         "TLS certificate verification failed inside the step")
    assert lines[-1] == CA_HINT
    assert error["cause"] == "tls-verify" and len(error["log_tail"]) == 4
    assert any("No matching distribution found for six" in line for line in error["log_tail"])
    _assert_step_report(lines, error, "pip install six")

    # --progress json: the failure is one event carrying the same facts.
    proc = envd.run("build", "--progress", "json", "--log-lines", "4", "--output",
                    f"type=tar,dest={context / 'out.tar'}", cwd=context, check=False)
    events = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    failures = [e for e in events if e["type"] == "failure"]
    assert len(failures) == 1
    assert {k: failures[0][k] for k in ("message", "hint", "cause", "step", "exit_code", "stage")
            } == {k: error[k] for k in ("message", "hint", "cause", "step", "exit_code", "stage")}
    assert len(failures[0]["log_tail"]) == 4
    assert proc.stderr.splitlines()[-1] == CA_HINT


def test_package_not_found(envd: _Envd, tmp_path: Path, registry: str) -> None:
    """A package no index has: named, with the index pip used."""
    package = f"envd-no-such-package-{marker()}"
    context = _context(tmp_path / "env", f'base(image="{registry}/python:3.11-bookworm", '
                       'dev=False)', "install.python()",
                       f'install.python_packages(name=["{package}"])')
    lines, error = _fail(envd, context, "--ca-bundle", envd.ca_bundle)
    assert lines[-2] == (f"envd: step `pip install {package}` failed with exit code 1: pip found "
                         f"no package `{package}` on PyPI (`https://pypi.org/simple`)")
    assert lines[-1] == ("hint: check the name and version in install.python_packages(); a "
                         "private index is set with PIP_INDEX_URL or a pip.conf in the base image")
    assert error["cause"] == "package-not-found"
    _assert_step_report(lines, error, f"pip install {package}")


def test_unresolvable_host(envd: _Envd, tmp_path: Path, registry: str) -> None:
    """A step that looks up a host that does not exist: DNS, and --use-proxy as the fix."""
    host = f"envd-{marker()}.invalid"
    command = f"python3 -c 'import socket; socket.getaddrinfo(\\\"{host}\\\", 443)'"
    context = _context(tmp_path / "env", f'base(image="{registry}/python:3.11-bookworm", '
                       'dev=False)', f'run(commands=["{command}"])')
    lines, error = _fail(envd, context)
    shown = command.replace("\\", "")
    assert lines[-2] == (f"envd: step `run: {shown}` failed with exit code 1: a host name "
                         "did not resolve on the builder")
    assert lines[-1] == ("hint: the builder has no DNS for it: a remote builder may need "
                         "`--use-proxy` (HTTP_PROXY/HTTPS_PROXY) or a package mirror it can reach")
    assert error["cause"] == "dns"
    assert any("Name or service not known" in line for line in error["log_tail"])
    _assert_step_report(lines, error, f"run: {shown}")


# -- a full disk: a private buildkitd whose root is a tiny tmpfs ------------------------------


def test_disk_full(envd: _Envd, tmp_path: Path, registry: str,
                   tiny_disk_buildkitd: Any) -> None:
    """A step that fills the builder's disk: the fix is `envd prune`."""
    envd.run("context", "create", "--name", "tiny", "--builder", "unix", "--builder-address",
             tiny_disk_buildkitd.address, "--use")
    command = "dd if=/dev/zero of=/fill bs=1M count=256"
    context = _context(tmp_path / "env", f'base(image="{registry}/busybox:latest", dev=False)',
                       f'run(commands=["{command}"])')
    lines, error = _fail(envd, context)
    assert lines[-2] == (f"envd: step `run: {command}` failed with exit code 1: "
                         "the builder ran out of disk space")
    assert lines[-1] == ("hint: free the builder's cache with `envd prune` (or `envd prune "
                         "--all`), or give its daemon a larger disk")
    assert error["cause"] == "no-space"
    assert any("No space left on device" in line for line in error["log_tail"])
    _assert_step_report(lines, error, f"run: {command}")
