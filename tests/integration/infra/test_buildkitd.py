"""buildctl builds against every buildkitd endpoint; mTLS refuses clients without the cert."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from infra_helpers import sh, write_dockerfile

pytestmark = pytest.mark.integration


def _endpoint_args(infra: dict[str, Any], which: str, buildkit_mtls: Any) -> list[str]:
    if which == "mtls":
        return buildkit_mtls.buildctl_args()
    return ["--addr", infra["BUILDKIT_UNIX" if which == "unix" else "BUILDKIT_TCP"]]


@pytest.mark.parametrize("which", ["unix", "tcp", "mtls"])
def test_dockerfile_build_on_each_endpoint(infra: dict[str, Any], buildkit_mtls: Any,
                                           which: str, tmp_path: Path) -> None:
    # The build step fetches over plain HTTP from the Debian mirror: host networking works.
    ctx = write_dockerfile(tmp_path / "ctx", (
        f"FROM {infra['IMAGE_BUSYBOX']}\n"
        f"RUN echo built-on-{which} > /out.txt && "
        "wget -q -O /release http://deb.debian.org/debian/dists/bookworm/Release\n"
        "FROM scratch\nCOPY --from=0 /out.txt /release /\n"))
    out = tmp_path / "out"
    sh(infra["BUILDCTL"], *_endpoint_args(infra, which, buildkit_mtls), "build",
       "--frontend", "dockerfile.v0", "--local", f"context={ctx}", "--local",
       f"dockerfile={ctx}", "--output", f"type=local,dest={out}")
    assert (out / "out.txt").read_text().strip() == f"built-on-{which}"
    assert "Codename: bookworm" in (out / "release").read_text()


def test_mtls_without_client_cert_is_refused(infra: dict[str, Any], buildkit_mtls: Any) -> None:
    proc = sh(infra["BUILDCTL"], "--addr", buildkit_mtls.address, "--tlsservername",
              buildkit_mtls.servername, "--tlscacert", buildkit_mtls.ca, "debug", "workers",
              check=False, timeout=60)
    # TLS 1.3 rejects a missing client cert after the handshake, so the client sees either a
    # certificate alert or a broken pipe; what matters is that no RPC gets through.
    assert proc.returncode != 0
    assert "failed to list workers" in proc.stderr
    assert sh(infra["BUILDCTL"], *buildkit_mtls.buildctl_args(), "debug", "workers").stdout


def test_mtls_with_wrong_ca_is_refused(infra: dict[str, Any], buildkit_mtls: Any) -> None:
    args = buildkit_mtls.buildctl_args()
    args[args.index("--tlscacert") + 1] = buildkit_mtls.bad_ca
    proc = sh(infra["BUILDCTL"], *args, "debug", "workers", check=False, timeout=60)
    assert proc.returncode != 0
    assert "certificate" in proc.stderr.lower()


def test_push_from_buildkitd_to_registry(infra: dict[str, Any], tmp_path: Path) -> None:
    ref = f"{infra['REGISTRY']}/smoke/from-buildkitd:latest"
    ctx = write_dockerfile(tmp_path, f"FROM {infra['IMAGE_BUSYBOX']}\nRUN echo pushed > /p\n")
    sh(infra["BUILDCTL"], "--addr", infra["BUILDKIT_UNIX"], "build", "--frontend",
       "dockerfile.v0", "--local", f"context={ctx}", "--local", f"dockerfile={ctx}",
       "--output", f"type=image,name={ref},push=true")
    out = sh("docker", "run", "--rm", "--pull", "always", ref, "cat", "/p").stdout
    assert out.strip() == "pushed"
    sh("docker", "rmi", ref, check=False)


def test_disposable_buildkitd_can_be_killed(infra: dict[str, Any],
                                            disposable_buildkitd: Any) -> None:
    import os
    import signal

    addr = disposable_buildkitd.address
    assert sh(infra["BUILDCTL"], "--addr", addr, "debug", "workers").returncode == 0
    os.kill(disposable_buildkitd.pid, signal.SIGKILL)
    os.waitpid(disposable_buildkitd.pid, 0)
    proc = sh(infra["BUILDCTL"], "--addr", addr, "debug", "workers", check=False, timeout=60)
    assert proc.returncode != 0


def test_https_in_build_step_with_ca_bundle_secret(infra: dict[str, Any], tmp_path: Path) -> None:
    # The intercepting proxy's CA reaches the step as a secret mount over the image's bundle;
    # the same step without it fails verification (checked first, in the same build context).
    fetch = ("python3 -c \"import urllib.request; urllib.request.urlopen("
             "'https://pypi.org/simple/pip/', timeout=60); open('/ok', 'w').write('ok')\"")
    ctx = write_dockerfile(tmp_path / "ctx", (
        f"FROM {infra['IMAGE_PYTHON']}\n"
        f"RUN ! {fetch} 2> /err && grep -q CERTIFICATE_VERIFY_FAILED /err\n"
        "RUN --mount=type=secret,id=cabundle,target=/etc/ssl/certs/ca-certificates.crt "
        f"{fetch}\n"
        "FROM scratch\nCOPY --from=0 /ok /err /\n"))
    out = tmp_path / "out"
    sh(infra["BUILDCTL"], "--addr", infra["BUILDKIT_UNIX"], "build", "--frontend",
       "dockerfile.v0", "--local", f"context={ctx}", "--local", f"dockerfile={ctx}",
       "--secret", f"id=cabundle,src={infra['CA_BUNDLE']}",
       "--output", f"type=local,dest={out}")
    assert (out / "ok").read_text() == "ok"
    assert "CERTIFICATE_VERIFY_FAILED" in (out / "err").read_text()


def test_build_from_auth_registry_needs_credentials(infra: dict[str, Any], auth_registry: Any,
                                                    tmp_path: Path) -> None:
    # buildkitd trusts the auth registry's CA via buildkitd.toml (and uses https for it even
    # though it is on localhost); credentials come from the client's docker config.
    import os

    cfg = tmp_path / "docker-config"
    env = {**os.environ, "DOCKER_CONFIG": str(cfg)}
    ref = f"{auth_registry.address}/smoke/base:latest"
    sh("sh", "-c", f'printf %s "$PW" | docker login -u {auth_registry.user} --password-stdin '
       f"{auth_registry.address}", env={**env, "PW": auth_registry.password})
    sh("docker", "tag", infra["IMAGE_BUSYBOX"], ref)
    sh("docker", "push", ref, env=env)
    sh("docker", "rmi", ref)
    ctx = write_dockerfile(tmp_path / "ctx", f"FROM {ref}\nRUN echo from-auth > /a\n"
                           "FROM scratch\nCOPY --from=0 /a /\n")
    argv = [infra["BUILDCTL"], "--addr", infra["BUILDKIT_UNIX"], "build", "--frontend",
            "dockerfile.v0", "--local", f"context={ctx}", "--local", f"dockerfile={ctx}",
            "--no-cache", "--output", f"type=local,dest={tmp_path / 'out'}"]
    sh(*argv, env=env)
    assert (tmp_path / "out" / "a").read_text() == "from-auth\n"
    anonymous = sh(*argv, check=False,
                   env={**os.environ, "DOCKER_CONFIG": str(tmp_path / "empty")})
    assert anonymous.returncode != 0
    assert "401 Unauthorized" in anonymous.stderr or "authoriz" in anonymous.stderr.lower()


# The tag v0.18.2 of moby/buildkit; the infra stamps it into both binaries (docs/infra.md).
RELEASE = ("github.com/moby/buildkit", "v0.18.2", "e4da654b1251f91e914fab18eba33743aefd7080")


@pytest.mark.parametrize("key", ["BUILDKITD", "BUILDCTL"])
def test_binaries_report_the_release_version(infra: dict[str, Any], key: str) -> None:
    words = sh(infra[key], "--version").stdout.split()
    assert tuple(words[1:4]) == RELEASE, words


@pytest.mark.parametrize("which", ["unix", "tcp", "mtls"])
def test_info_rpc_reports_the_release_version(infra: dict[str, Any], buildkit_mtls: Any,
                                              which: str) -> None:
    # What `envd context ls --status` shows as the version comes from this RPC.
    from envd_core.buildkit.client import BuildkitClient
    from envd_core.buildkit.transport import TLSConfig, connect_tcp, connect_unix

    if which == "unix":
        conn = connect_unix(infra["BUILDKIT_UNIX"])
    else:
        host, port = infra["BUILDKIT_TCP" if which == "tcp" else "BUILDKIT_MTLS"].removeprefix(
            "tcp://").rsplit(":", 1)
        tls = TLSConfig(buildkit_mtls.ca, buildkit_mtls.cert, buildkit_mtls.key,
                        buildkit_mtls.servername) if which == "mtls" else None
        conn = connect_tcp(host, int(port), tls=tls)
    try:
        info = BuildkitClient(conn).info(timeout=30)
    finally:
        conn.close()
    assert info is not None
    assert (info.package, info.version, info.revision) == RELEASE


def test_context_ls_status_shows_the_release_version(infra: dict[str, Any],
                                                     tmp_path: Path) -> None:
    import json
    import os
    import shutil
    import sys

    envd = shutil.which("envd", path=os.path.dirname(sys.executable)) or "envd"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENVD_")}
    env.update(ENVD_CONFIG_DIR=str(tmp_path / "config"), DOCKER_HOST=infra["DOCKER_HOST"])
    sh(envd, "context", "create", "--name", "stamped", "--builder", "tcp",
       "--builder-address", infra["BUILDKIT_TCP"], env=env)
    rows = json.loads(sh(envd, "context", "ls", "--status", "--format", "json", env=env).stdout)
    status = {row["context"]: row["status"] for row in rows}["stamped"]
    assert status["version"] == RELEASE[1], status
