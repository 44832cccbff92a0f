"""Solve against real daemons: exec + file ops with Status, failures, push, daemon death."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import threading
import time
from typing import Any

import pytest

from envd_core.buildkit import llb
from envd_core.buildkit.client import BuildkitClient
from envd_core.buildkit.exporters import Exporter
from envd_core.buildkit.progress import BuildTrace, ProgressPrinter
from envd_core.buildkit.transport import connect_bridge, connect_unix, dial_process
from envd_core.errors import BuilderError, BuildError


def _graph(infra: dict[str, Any], token: str) -> llb.State:
    base = llb.image(infra["IMAGE_BUSYBOX"])
    ex = base.run(f"echo built-{token} > /made && echo log-{token}", name=f"make {token}")
    return (
        ex.root()
        .mkdir("/data/sub")
        .mkfile("/data/sub/f", token)
        .copy(ex.root(), "/made", "/data/made")
        .rm("/made")
    )


def test_solve_exec_and_file_ops_streams_status(bk: BuildkitClient, infra: dict[str, Any]) -> None:
    token = secrets.token_hex(6)
    trace = BuildTrace()
    resp = bk.solve(_graph(infra, token).to_definition(), on_status=trace.update)
    assert resp == {}  # no exporter, nothing to report
    names = [s.name for s in trace.steps.values()]
    assert f"make {token}" in names and "mkdir /data/sub" in names
    step = next(s for s in trace.steps.values() if s.name == f"make {token}")
    assert f"log-{token}" in step.logs and step.completed and not step.cached


def test_second_solve_is_cached(bk: BuildkitClient, infra: dict[str, Any]) -> None:
    st = _graph(infra, secrets.token_hex(6))
    bk.solve(st.to_definition())
    trace = BuildTrace()
    bk.solve(st.to_definition(), on_status=trace.update)
    execs = [s for s in trace.steps.values() if s.name.startswith("make ")]
    assert execs and all(s.cached for s in execs)


def test_failing_step_raises_build_error_with_log_tail(
    bk: BuildkitClient, infra: dict[str, Any]
) -> None:
    token = secrets.token_hex(4)
    st = llb.image(infra["IMAGE_BUSYBOX"]).run(
        f"for i in $(seq 1 40); do echo line-$i; done; echo last-{token}; exit 3",
        name=f"doomed {token}",
    )
    with pytest.raises(BuildError) as ei:
        bk.solve(st.root().to_definition())
    err = ei.value
    assert f"`doomed {token}`" in str(err) and "exit code: 3" in str(err)
    assert "\n" not in str(err)
    assert err.log_tail[-1] == f"last-{token}"  # type: ignore[attr-defined]
    assert len(err.log_tail) == 20 and "line-1" not in err.log_tail  # type: ignore[attr-defined]
    assert err.hint is not None and f"last-{token}" in err.hint


def test_plain_progress_during_real_solve(
    bk: BuildkitClient, infra: dict[str, Any], tmp_path: Any
) -> None:
    token = secrets.token_hex(6)
    out = tmp_path / "progress.txt"
    with out.open("w") as f, ProgressPrinter("plain", stream=f) as p:
        bk.solve(_graph(infra, token).to_definition(), on_status=p)
    text = out.read_text()
    assert f"make {token}" in text and f"log-{token}" in text and "DONE" in text


def test_push_to_local_registry_and_docker_pull(bk: BuildkitClient, infra: dict[str, Any]) -> None:
    tag = f"{infra['REGISTRY']}/envd-test/bkcore:{secrets.token_hex(4)}"
    st = llb.image(infra["IMAGE_BUSYBOX"]).mkfile("/pushed", "yes")
    resp = bk.solve(st.to_definition(), exporters=[Exporter.image(tag, push=True)])
    assert resp["containerimage.digest"].startswith("sha256:")
    try:
        pull = subprocess.run(
            ["docker", "pull", tag], check=False, capture_output=True, text=True, timeout=120
        )
        assert pull.returncode == 0, pull.stderr
        cat = subprocess.run(
            ["docker", "run", "--rm", tag, "cat", "/pushed"],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cat.stdout == "yes", cat.stderr
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], check=False, capture_output=True, timeout=60)


def test_dockerd_solve_with_moby_exporter(
    dockerd_bk: BuildkitClient, infra: dict[str, Any]
) -> None:
    """BuildKit v0.8 inside dockerd 20.10: exporter fields 3/4 are what it reads."""
    token = secrets.token_hex(4)
    tag = f"envd-test/bkcore-moby:{token}"
    trace = BuildTrace()
    st = llb.image(infra["IMAGE_BUSYBOX"]).run(f"echo moby-{token} > /m", name="write").root()
    resp = dockerd_bk.solve(
        st.to_definition(), exporters=[Exporter.moby(tag)], on_status=trace.update
    )
    try:
        assert resp["containerimage.digest"].startswith("sha256:")
        assert any(s.name == "write" and s.completed for s in trace.steps.values())
        cat = subprocess.run(
            ["docker", "run", "--rm", tag, "cat", "/m"],
            check=False,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert cat.stdout.strip() == f"moby-{token}", cat.stderr
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], check=False, capture_output=True, timeout=60)


def test_dockerd_failing_step(dockerd_bk: BuildkitClient, infra: dict[str, Any]) -> None:
    st = llb.image(infra["IMAGE_BUSYBOX"]).run("echo v08-tail; exit 5", name="v08 fails").root()
    with pytest.raises(BuildError) as ei:
        dockerd_bk.solve(st.to_definition())
    assert "`v08 fails`" in str(ei.value) and "v08-tail" in (ei.value.hint or "")


def _bridge_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("envd-bk-")]


@pytest.mark.parametrize("via", ["unix", "dial-stdio"])
def test_daemon_killed_mid_build_fails_fast_without_leftovers(
    disposable_buildkitd: Any, infra: dict[str, Any], via: str
) -> None:
    addr = disposable_buildkitd.address
    if via == "unix":
        conn = connect_unix(addr)
    else:
        conn = connect_bridge(
            dial_process([infra["BUILDCTL"], "--addr", addr, "dial-stdio"]), target="dial-stdio"
        )
    bridge = conn._closers[0].__self__ if conn._closers else None  # type: ignore[attr-defined]
    client = BuildkitClient(conn)
    started = threading.Event()
    result: dict[str, BaseException | None] = {"err": None}

    def on_status(resp: Any) -> None:
        if any(v.name == "sleeper" and v.HasField("started") for v in resp.vertexes):
            started.set()

    def run() -> None:
        st = (
            llb.image(infra["IMAGE_BUSYBOX"])
            .run(f"sleep 300 # {secrets.token_hex(4)}", name="sleeper")
            .root()
        )
        try:
            client.solve(st.to_definition(), on_status=on_status)
        except BaseException as e:  # noqa: BLE001 - handed to the test thread
            result["err"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(120), "the sleep step never started"
    os.killpg(disposable_buildkitd.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    t.join(10)
    assert not t.is_alive(), "solve hung after buildkitd died"
    assert time.monotonic() - killed_at < 10
    err = result["err"]
    assert isinstance(err, BuilderError) and not isinstance(err, BuildError), err
    assert "sleeper" in str(err)  # says which step was running
    sock_dir = os.path.dirname(bridge.path) if bridge is not None else None
    procs = [s.proc for s in list(bridge._streams) if hasattr(s, "proc")] if bridge else []
    conn.close()
    assert not _bridge_threads()
    if sock_dir is not None:
        assert not os.path.exists(sock_dir)
    assert all(p.poll() is not None for p in procs)


def test_two_exporters_on_v08_is_refused_before_building(
    dockerd_bk: BuildkitClient, infra: dict[str, Any]
) -> None:
    st = llb.image(infra["IMAGE_BUSYBOX"]).mkfile("/x", "1")
    with pytest.raises(BuildError, match=r"older than v0\.13"):
        dockerd_bk.solve(st.to_definition(), exporters=[Exporter.moby("a:1"), Exporter.tar()])


@pytest.mark.parametrize("daemon", ["buildkitd", "dockerd"])
def test_dockerfile_frontend_with_llb_inputs(
    daemon: str, bk: BuildkitClient, dockerd_bk: BuildkitClient, infra: dict[str, Any]
) -> None:
    """frontend + frontend_inputs: the Dockerfile and context come as LLB, no session needed."""
    client = bk if daemon == "buildkitd" else dockerd_bk
    token = secrets.token_hex(4)
    dockerfile = f"FROM {infra['IMAGE_BUSYBOX']}\nCOPY hello /hello\nRUN cat /hello\n"
    df = llb.scratch().mkfile("/Dockerfile", dockerfile)
    ctx = llb.scratch().mkfile("/hello", f"from-context-{token}\n")
    trace = BuildTrace()
    client.solve(
        None,
        frontend="dockerfile.v0",
        frontend_attrs={"filename": "Dockerfile"},
        frontend_inputs={"dockerfile": df.to_definition(), "context": ctx.to_definition()},
        on_status=trace.update,
    )
    logs = [line for s in trace.steps.values() for line in s.logs]
    assert f"from-context-{token}" in logs


_CTRL_C_CHILD = """
import sys
from envd_core.buildkit import llb
from envd_core.buildkit.client import BuildkitClient
from envd_core.buildkit.transport import connect_unix

conn = connect_unix(sys.argv[1])
def on_status(resp):
    if any(v.name == "sleeper" and v.HasField("started") for v in resp.vertexes):
        print("STARTED", flush=True)
st = llb.image(sys.argv[2]).run("sleep " + sys.argv[3], name="sleeper").root()
try:
    BuildkitClient(conn).solve(st.to_definition(), on_status=on_status)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
    conn.close()
    sys.exit(130)
"""


def test_ctrl_c_cancels_the_build_on_the_daemon(infra: dict[str, Any]) -> None:
    import sys

    # A unique duration makes the step's process findable with ps (sh execs sleep directly).
    token = str(300000 + secrets.randbelow(600000))

    def sleeper_running() -> bool:
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
        return any(line.strip().endswith(f"sleep {token}") for line in ps.stdout.splitlines())

    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            _CTRL_C_CHILD,
            infra["BUILDKIT_UNIX"],
            infra["IMAGE_BUSYBOX"],
            token,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "STARTED", (
            child.stderr.read() if child.stderr else ""
        )
        deadline = time.monotonic() + 15
        while not sleeper_running() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sleeper_running(), "the step never started on the daemon"
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=10)
        assert child.returncode == 130, err
        assert "INTERRUPTED" in out
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()

    deadline = time.monotonic() + 15
    while sleeper_running() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not sleeper_running(), "the daemon kept running the cancelled step"


def test_merge_and_diff_on_buildkitd_and_refused_on_v08(
    bk: BuildkitClient, dockerd_bk: BuildkitClient, infra: dict[str, Any], tmp_path: Any
) -> None:
    from envd_core.buildkit.session import ExportTarget, Session

    base = llb.image(infra["IMAGE_BUSYBOX"])
    a = llb.scratch().mkfile("/a", "1")
    b = llb.scratch().mkfile("/b", "2")
    changed = base.mkfile("/new", "3")
    st = llb.merge([a, b, llb.diff(base, changed)])
    dest = tmp_path / "out"
    with Session(shared_key="merge-diff", export=ExportTarget.directory(dest)) as session:
        bk.solve(st.to_definition(), exporters=[Exporter.local()], session=session)
    assert sorted(p.name for p in dest.iterdir()) == ["a", "b", "new"]
    with pytest.raises(BuildError, match=r"older than v0\.10"):
        dockerd_bk.solve(st.to_definition())


def test_image_config_through_exporter_attrs(bk: BuildkitClient, infra: dict[str, Any]) -> None:
    """Raw LLB has no image config; ``containerimage.config`` supplies ENV/CMD/labels."""
    import json

    tag = f"{infra['REGISTRY']}/envd-test/bkcore-config:{secrets.token_hex(4)}"
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Env": ["PATH=/bin:/usr/bin", "GREETING=hi"],
            "Cmd": ["sh", "-c", "echo $GREETING from-cmd"],
            "Labels": {"org.example.test": "yes"},
        },
        "rootfs": {"type": "layers"},
    }
    st = llb.image(infra["IMAGE_BUSYBOX"]).mkfile("/marker", "m")
    bk.solve(
        st.to_definition(),
        exporters=[Exporter.image(tag, push=True, config=json.dumps(config))],
    )
    try:
        pull = subprocess.run(
            ["docker", "pull", tag], check=False, capture_output=True, text=True, timeout=120
        )
        assert pull.returncode == 0, pull.stderr
        run = subprocess.run(
            ["docker", "run", "--rm", tag], check=False, capture_output=True, text=True, timeout=120
        )
        assert run.stdout.strip() == "hi from-cmd", run.stderr
        labels = subprocess.run(
            ["docker", "inspect", "-f", "{{json .Config.Labels}}", tag],
            check=False,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert json.loads(labels.stdout) == {"org.example.test": "yes"}
    finally:
        subprocess.run(["docker", "rmi", "-f", tag], check=False, capture_output=True, timeout=60)


def test_registry_cache_export_then_import_on_a_fresh_daemon(
    bk: BuildkitClient, disposable_buildkitd: Any, infra: dict[str, Any]
) -> None:
    """cache_exports/cache_imports reach the daemon: a fresh buildkitd reuses the exec."""
    token = secrets.token_hex(6)
    ref = f"{infra['REGISTRY']}/envd-test/bkcore-cache:{token}"
    st = llb.image(infra["IMAGE_BUSYBOX"]).run(f"echo {token} > /t", name="cached-exec").root()
    bk.solve(
        st.to_definition(),
        cache_exports=[{"type": "registry", "attrs": {"ref": ref, "mode": "max"}}],
    )
    with connect_unix(disposable_buildkitd.address) as conn:
        trace = BuildTrace()
        BuildkitClient(conn).solve(
            st.to_definition(),
            cache_imports=[{"type": "registry", "attrs": {"ref": ref}}],
            on_status=trace.update,
        )
    step = next(s for s in trace.steps.values() if s.name == "cached-exec")
    assert step.cached


def test_unknown_exporter_on_dockerd_hints_at_moby(
    dockerd_bk: BuildkitClient, infra: dict[str, Any]
) -> None:
    st = llb.scratch().mkfile("/x", "y")
    with pytest.raises(BuildError, match='exporter "image" could not be found') as ei:
        dockerd_bk.solve(st.to_definition(), exporters=[Exporter.image("127.0.0.1:5000/x:y")])
    assert "`moby`" in (ei.value.hint or "")
