"""Project-wide pytest wiring: the real infrastructure from ``scripts/infra`` as fixtures.

Integration tests (marker ``integration``; everything under ``tests/integration`` gets it
automatically) ask for the ``infra`` fixture or one of the convenience fixtures below. Without a
running infra they are skipped with the reason; with ``CI=true`` such a skip is turned into a
failure, because in CI a skipped integration test means something was never tested.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent
INFRA_SCRIPT = ROOT / "scripts" / "infra"

try:  # the core owner ships shared fixtures there; absent early in the project's life
    _HAS_CORE_TESTING = importlib.util.find_spec("envd_core.testing") is not None
except ImportError:
    _HAS_CORE_TESTING = False
pytest_plugins = ["envd_core.testing"] if _HAS_CORE_TESTING else []


def in_ci() -> bool:
    """CI runs must not skip integration tests silently."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


# ---------------------------------------------------------------- the user's files


@pytest.fixture(autouse=True, scope="session")
def _keep_out_of_the_users_config() -> Iterator[None]:
    """Point ``ENVD_CONFIG_DIR`` and ``XDG_DATA_HOME`` at a session temp dir unless the run
    already names them.

    A test that forgets the ``envd_config_dir`` fixture, or a subprocess it starts, would
    otherwise read and write the real ``~/.config/envd`` of whoever runs the suite (it happened:
    contexts leaked into /root/.config/envd); ``envd bootstrap`` writes shell completion under
    the data dir. Tests that need their own dirs still set them.
    """
    names = [n for n in ("ENVD_CONFIG_DIR", "XDG_DATA_HOME", "ENVD_CACHE_DIR")
             if not os.environ.get(n)]
    if not names:
        yield
        return
    with tempfile.TemporaryDirectory(prefix="envd-test-home-") as tmp:
        for name in names:
            os.environ[name] = os.path.join(tmp, name.lower())
        try:
            yield
        finally:
            for name in names:
                os.environ.pop(name, None)


@pytest.fixture(autouse=True, scope="session")
def _resident_servers_of_this_session() -> Iterator[str]:
    """The envd resident servers the suite's ``envd`` processes start live in a socket
    directory of this session (``ENVD_RESIDENT_DIR``), idle out after 2 minutes
    (``ENVD_RESIDENT_IDLE``), and are stopped when the session ends: the suite runs with the
    resident on, as users run envd, and leaves no process behind. A run that names its own
    ``ENVD_RESIDENT_DIR`` keeps it (and its servers)."""
    if os.environ.get("ENVD_RESIDENT_DIR"):
        yield os.environ["ENVD_RESIDENT_DIR"]
        return
    # short and under /tmp: an AF_UNIX path has room for 107 bytes
    directory = tempfile.mkdtemp(prefix="envd-res-", dir="/tmp")
    began = time.time()
    os.environ["ENVD_RESIDENT_DIR"] = directory
    idle_set = "ENVD_RESIDENT_IDLE" in os.environ
    if not idle_set:
        os.environ["ENVD_RESIDENT_IDLE"] = "120"
    try:
        yield directory
    finally:
        from envd_core.resident.client import servers, stop

        for sock in servers(directory):
            stop(sock, wait=60)
        # a test that runs envd with an environment of its own (no ENVD_RESIDENT_DIR) starts
        # its server in the default directory: stop those this session started
        for default in _default_resident_dirs():
            for sock in servers(default):
                with contextlib.suppress(OSError):
                    if os.stat(sock).st_mtime >= began:
                        stop(sock, wait=60)
        os.environ.pop("ENVD_RESIDENT_DIR", None)
        if not idle_set:
            os.environ.pop("ENVD_RESIDENT_IDLE", None)
        shutil.rmtree(directory, ignore_errors=True)


def _default_resident_dirs() -> list[str]:
    from envd_core.resident.wire import socket_dir

    dirs = {socket_dir({})}
    if os.environ.get("XDG_RUNTIME_DIR"):
        dirs.add(socket_dir({"XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"]}))
    return sorted(dirs)


# ---------------------------------------------------------------- hooks


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test under a ``tests/integration`` directory as ``integration``."""
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts and "tests" in parts:
            item.add_marker(pytest.mark.integration)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    """In CI, a skipped integration test is a failed one (reason kept in the report)."""
    outcome = yield
    report = outcome.get_result()
    if not (in_ci() and report.skipped and item.get_closest_marker("integration")):
        return
    reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
    report.outcome = "failed"
    report.longrepr = f"integration test skipped while CI=true (must run in CI): {reason}"


# ---------------------------------------------------------------- infra


def _load_infra() -> dict[str, Any]:
    """Parsed ``scripts/infra env --json``, or a skip saying why the infra is unusable."""
    if not INFRA_SCRIPT.exists():
        pytest.skip(f"infra script missing at `{INFRA_SCRIPT}`")
    python = shutil.which("python3") or sys.executable
    proc = subprocess.run([python, str(INFRA_SCRIPT), "env", "--json"], capture_output=True,
                          text=True, timeout=60, check=False)
    if proc.returncode != 0:
        pytest.skip(f"`scripts/infra env --json` failed: {proc.stderr.strip()[-300:]}")
    env: dict[str, Any] = json.loads(proc.stdout)
    problems = []
    if not _unix_answers(env["DOCKER_HOST"].removeprefix("unix://")):
        problems.append("dockerd")
    for key in ("REGISTRY", "AUTH_REGISTRY"):
        if not _tcp_answers(env[key]):
            problems.append(key.lower())
    if not _unix_answers(env["BUILDKIT_UNIX"].removeprefix("unix://")):
        problems.append("buildkitd")
    for key in ("BUILDKIT_TCP", "BUILDKIT_MTLS"):
        if not _tcp_answers(env[key].removeprefix("tcp://")):
            problems.append(key.lower())
    if problems:
        pytest.skip(f"infra not running ({', '.join(problems)} down): run `scripts/infra up`")
    return env


def _unix_answers(path: str) -> bool:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(path)
        return True
    except OSError:
        return False


def _tcp_answers(hostport: str) -> bool:
    host, port = hostport.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def infra() -> dict[str, Any]:
    """Endpoints of the running infra (keys documented in docs/infra.md); skips if down.

    Dev images (``base(dev=True)``) copy envd-sshd from ``ENVD_SSHD_IMAGE``, whose default is
    upstream's ghcr.io image, unreachable here: every test and the envd processes it starts take
    the infra's local copy unless the run names another.
    """
    env = _load_infra()
    if env.get("SSHD_IMAGE"):
        os.environ.setdefault("ENVD_SSHD_IMAGE", str(env["SSHD_IMAGE"]))
    return env


@pytest.fixture(scope="session")
def docker_host(infra: dict[str, Any]) -> str:
    """``unix:///var/run/docker.sock`` of a dockerd that answers."""
    return str(infra["DOCKER_HOST"])


@pytest.fixture(scope="session")
def registry(infra: dict[str, Any]) -> str:
    """``127.0.0.1:5000``: plain-HTTP registry holding the base images."""
    return str(infra["REGISTRY"])


@dataclass(frozen=True)
class AuthRegistry:
    """The htpasswd + TLS registry and what it takes to use it."""

    address: str
    user: str
    password: str
    ca: str


@pytest.fixture(scope="session")
def auth_registry(infra: dict[str, Any]) -> AuthRegistry:
    """The registry that needs credentials and trusts only the infra's registry CA."""
    return AuthRegistry(infra["AUTH_REGISTRY"], infra["AUTH_REGISTRY_USER"],
                        infra["AUTH_REGISTRY_PASSWORD"], infra["AUTH_REGISTRY_CA"])


@dataclass(frozen=True)
class MtlsEndpoint:
    """The mutual-TLS buildkitd: address plus the client certificate to reach it."""

    address: str
    ca: str
    cert: str
    key: str
    servername: str
    bad_ca: str

    def buildctl_args(self) -> list[str]:
        """``buildctl`` global flags that authenticate against this endpoint."""
        return ["--addr", self.address, "--tlsservername", self.servername,
                "--tlscacert", self.ca, "--tlscert", self.cert, "--tlskey", self.key]


@pytest.fixture(scope="session")
def buildkit_unix(infra: dict[str, Any]) -> str:
    """``unix:///…/buildkitd.sock`` of the root buildkitd."""
    return str(infra["BUILDKIT_UNIX"])


@pytest.fixture(scope="session")
def buildkit_tcp(infra: dict[str, Any]) -> str:
    """``tcp://127.0.0.1:1234``: the same buildkitd over plain TCP."""
    return str(infra["BUILDKIT_TCP"])


@pytest.fixture(scope="session")
def buildkit_mtls(infra: dict[str, Any]) -> MtlsEndpoint:
    """``tcp://127.0.0.1:1235`` with the client certificate paths."""
    return MtlsEndpoint(infra["BUILDKIT_MTLS"], infra["BUILDKIT_MTLS_CA"],
                        infra["BUILDKIT_MTLS_CERT"], infra["BUILDKIT_MTLS_KEY"],
                        infra["BUILDKIT_MTLS_SERVERNAME"], infra["BUILDKIT_TLS_BAD_CA"])


@pytest.fixture(scope="session")
def buildctl(infra: dict[str, Any]) -> str:
    """Path of the ``buildctl`` v0.18.2 binary."""
    return str(infra["BUILDCTL"])


@pytest.fixture(scope="session")
def upstream_envd(infra: dict[str, Any]) -> str:
    """Path of upstream envd v1.3.4 (Go); skips (fails in CI) when it could not be built."""
    if not infra.get("UPSTREAM_ENVD"):
        pytest.skip("upstream envd is not installed: see `scripts/infra up` output")
    return str(infra["UPSTREAM_ENVD"])


@pytest.fixture(scope="session")
def ca_bundle(infra: dict[str, Any]) -> str:
    """Host CA bundle (includes the TLS-intercepting proxy's CA) for HTTPS in build steps."""
    return str(infra["CA_BUNDLE"])


@dataclass(frozen=True)
class DisposableBuildkitd:
    """A private buildkitd a test may kill; ``address`` is ``unix://…``."""

    address: str
    pid: int
    root: Path


@pytest.fixture
def disposable_buildkitd(infra: dict[str, Any]) -> Iterator[DisposableBuildkitd]:
    """Start a buildkitd on a fresh unix socket and root dir; kill it afterwards."""
    with _disposable_buildkitd(infra) as daemon:
        yield daemon


@pytest.fixture
def tiny_disk_buildkitd(infra: dict[str, Any]) -> Iterator[DisposableBuildkitd]:
    """A disposable buildkitd whose state lives on a 64 MiB tmpfs: its disk fills up."""
    with _disposable_buildkitd(infra, tmpfs_size="64m") as daemon:
        yield daemon


@contextlib.contextmanager
def _disposable_buildkitd(
    infra: dict[str, Any], *, tmpfs_size: str | None = None
) -> Iterator[DisposableBuildkitd]:
    if os.geteuid() != 0:
        pytest.skip("a root buildkitd (and mounting a tmpfs) needs root")
    scratch = Path(infra["INFRA_DIR"]) / "scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    # Short path on purpose: unix socket paths are limited to 107 bytes.
    root = Path(tempfile.mkdtemp(prefix="bk-", dir=scratch))
    if tmpfs_size is not None:
        (root / "state").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={tmpfs_size}", "tmpfs",
                        str(root / "state")], check=True)
    sock = root / "bk.sock"
    config = root / "buildkitd.toml"
    config.write_text(f'[registry."{infra["REGISTRY"]}"]\n  http = true\n  insecure = true\n'
                      f'[registry."{infra["AUTH_REGISTRY"]}"]\n  http = false\n'
                      f'  ca = ["{infra["AUTH_REGISTRY_CA"]}"]\n')
    argv = [infra["BUILDKITD"], "--root", str(root / "state"), "--addr", f"unix://{sock}",
            "--config", str(config), "--otel-socket-path", str(root / "otel.sock"),
            "--oci-worker=true", "--containerd-worker=false", "--oci-worker-net=host",
            "--allow-insecure-entitlement", "network.host"]
    log = (root / "buildkitd.log").open("wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            probe = subprocess.run([infra["BUILDCTL"], "--addr", f"unix://{sock}", "debug",
                                    "workers"], capture_output=True, timeout=20, check=False)
            if probe.returncode == 0:
                break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("disposable buildkitd did not start: "
                                   + (root / "buildkitd.log").read_text()[-800:])
            time.sleep(0.2)
        yield DisposableBuildkitd(f"unix://{sock}", proc.pid, root)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()
        _unmount_under(root)  # overlay snapshots stay mounted when the daemon was SIGKILLed
        shutil.rmtree(root, ignore_errors=True)


def _unmount_under(root: Path) -> None:
    """Lazily unmount everything mounted below ``root``, deepest first."""
    prefix = str(root) + "/"
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


# ---------------------------------------------------------------- hypothesis profiles
# CI runs the fuzz tests with a fixed seed (derandomize): a red run is reproducible and a green
# one stays green. `--fuzz-long` (or HYPOTHESIS_PROFILE=long) runs many more examples, randomly.
try:
    from hypothesis import HealthCheck
    from hypothesis import settings as _hypothesis_settings

    _hypothesis_settings.register_profile(
        "ci", derandomize=True, deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow])
    _hypothesis_settings.register_profile(
        "long", max_examples=5000, deadline=None, print_blob=True,
        suppress_health_check=[HealthCheck.too_slow])
    _hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # hypothesis is in the `test` extra; plain runs without it still work
    pass


def pytest_addoption(parser: pytest.Parser) -> None:
    """``--fuzz-long``: the long hypothesis profile (thousands of examples per fuzz test)."""
    parser.addoption("--fuzz-long", action="store_true",
                     help="run hypothesis fuzz tests with the long profile (5000 examples)")


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("--fuzz-long", default=False):
        from hypothesis import settings as hypothesis_settings

        hypothesis_settings.load_profile("long")
