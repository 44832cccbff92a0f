"""``envd build --dump-llb`` writes a definition ``buildctl build`` builds to the same rootfs.

The dump is the escape hatch for users who drive BuildKit themselves; buildctl must only need
what envd would have served over the session: the ``build-context`` local dir and the CA secret.
"""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

from test_envd_build_support import Envd, marker, write_environment


def test_dumped_llb_builds_with_buildctl(tmp_path: Path, registry: str, docker_host: str,
                                         ca_bundle: str, buildkit_tcp: str,
                                         buildctl: str) -> None:
    """Dump (file and stdout agree), build with buildctl, find the environment in the rootfs."""
    envd = Envd(tmp_path / "config", docker_host, ca_bundle)
    envd.run("context", "create", "--name", "tcp-dump", "--builder", "tcp", "--builder-address",
             buildkit_tcp, "--use")
    mark = marker()
    context = write_environment(tmp_path / "env", mark=mark, registry=registry)
    dump = tmp_path / "env.llb"
    envd.run("build", "--ca-bundle", ca_bundle, "--dump-llb", str(dump), cwd=context)
    to_stdout = subprocess.run([*envd.calls[-1][:-1], "-"], cwd=context, env=envd.env(),
                               capture_output=True, timeout=120, check=False)
    assert to_stdout.returncode == 0, to_stdout.stderr[-2000:]
    assert dump.stat().st_size > 0
    # The same bytes either way, in two processes (maps are written in sorted order).
    from envd_core.buildkit._pb import ops_pb2

    assert to_stdout.stdout == dump.read_bytes()
    parsed = ops_pb2.Definition.FromString(dump.read_bytes())
    assert len(getattr(parsed, "def")) >= 5  # base, apt, venv, pip, copies, ...

    rootfs = tmp_path / "rootfs.tar"
    with dump.open("rb") as llb:
        built = subprocess.run(
            [buildctl, "--addr", buildkit_tcp, "build", "--progress", "plain",
             "--local", f"build-context={context}",
             "--secret", f"id=envd-ca-bundle,src={ca_bundle}",
             "--output", f"type=tar,dest={rootfs}"],
            stdin=llb, capture_output=True, text=True, timeout=600, check=False)
    assert built.returncode == 0, built.stderr[-3000:]
    with tarfile.open(rootfs) as tar:
        names = set(tar.getnames())
        copied = tar.extractfile("opt/e2e/marker.txt")
        assert copied is not None and copied.read().decode() == f"copied {mark}\n"
    assert "usr/bin/jq" in names
    assert any(n.startswith("opt/envd/venv/lib/") and n.endswith("site-packages/six.py")
               for n in names)
