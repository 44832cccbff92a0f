"""The resident's lock files: removed on idle exit and on stop, dead keys' swept, no two servers.

The server tests run the real server (:func:`envd_core.resident.server.main`) in a subprocess
with ``preload`` replaced by a no-op, so a start costs a Python start-up, not the 1-3 s of
importing everything; what is under test (lock, bind, stop, exit) is the real code.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from envd_core.resident import lockfile, wire
from envd_core.resident.client import ask, stop

_SERVER = ("import sys; sys.path[:] = sys.argv[3:]; import envd_core.resident.preload as p; "
           "p.preload = lambda: (0, []); from envd_core.resident.server import main; main()")
KEY = "0000abcd"


@pytest.fixture
def sockets() -> Iterator[Path]:
    """A private socket directory short enough for AF_UNIX (tmp_path may not be)."""
    path = Path(tempfile.mkdtemp(prefix="envd-lk-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _server(directory: Path, idle: float, key: str = KEY) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ENVD_RESIDENT_IDLE": str(idle)}
    log = open(directory / "server.log", "ab")  # noqa: SIM115 - the child keeps it
    with log:
        return subprocess.Popen([sys.executable, "-c", _SERVER, str(directory), key, *sys.path],
                                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def _files(directory: Path, key: str = KEY) -> list[str]:
    return sorted(p.name for p in directory.glob(f"resident-{key}.*"))


def _wait_answering(sock: Path, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if ask(str(sock), "status", 1.0) is not None:
            return
        if proc.poll() is not None:
            raise AssertionError(f"server exited with {proc.returncode} before answering")
        time.sleep(0.02)
    raise AssertionError("server never answered")


def test_an_idle_server_removes_its_socket_and_lock_file(sockets: Path) -> None:
    proc = _server(sockets, idle=0.3)
    assert proc.wait(timeout=60) == 0
    log = (sockets / "server.log").read_text()
    assert "serving" in log and "idle for" in log, log
    assert _files(sockets) == []


def test_a_stopped_server_removes_its_socket_and_lock_file(sockets: Path) -> None:
    sock = sockets / f"resident-{KEY}.sock"
    proc = _server(sockets, idle=300)
    try:
        _wait_answering(sock, proc)
        assert _files(sockets) == [f"resident-{KEY}.lock", f"resident-{KEY}.sock"]
        assert stop(str(sock)) == proc.pid
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _files(sockets) == []


def test_a_starting_server_sweeps_dead_keys_and_spares_held_ones(sockets: Path) -> None:
    (sockets / "resident-dead0001.lock").touch()
    orphan = socket.socket(socket.AF_UNIX)  # a crashed old server's socket, no lock file
    orphan.bind(str(sockets / "resident-dead0002.sock"))
    orphan.close()
    held = os.open(sockets / "resident-live0003.lock", os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a live (or starting) server's
    (sockets / "resident-live0003.sock").touch()
    try:
        proc = _server(sockets, idle=0.3)
        assert proc.wait(timeout=60) == 0
    finally:
        os.close(held)
    assert sorted(p.name for p in sockets.iterdir()) == [
        "resident-live0003.lock", "resident-live0003.sock", "server.log"]
    assert "removed the lock files and sockets of 2 dead servers" in (
        sockets / "server.log").read_text()


def test_stop_all_sweeps_dead_keys(sockets: Path) -> None:
    from click.testing import CliRunner

    from envd_core.cli.resident_cmd import resident

    (sockets / "resident-dead0001.lock").touch()
    (sockets / "resident-dead0002.sock").touch()
    done = CliRunner().invoke(resident, ["stop", "--all"],
                              env={"ENVD_RESIDENT_DIR": str(sockets)})
    assert done.exit_code == 0, done.output
    assert "Removed the lock files of 2 resident processes" in done.output
    assert list(sockets.iterdir()) == []


def test_a_lock_file_removed_between_open_and_flock_is_reopened(
        sockets: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The classic race, made deterministic: the holder removes the file and releases right
    after the starter opened it. The starter must not end up holding the orphaned inode (a
    third starter would then create a fresh file and lock it too: two servers)."""
    path = str(sockets / "resident-x.lock")
    holder = lockfile.acquire(path)
    assert holder is not None
    real_open = os.open
    opened: list[int] = []

    def open_then_holder_steps_aside(*args: object, **kwargs: object) -> int:
        fd = real_open(*args, **kwargs)  # type: ignore[arg-type]
        opened.append(fd)
        if len(opened) == 1:
            lockfile.remove(holder, path, path[:-5] + ".sock")
        return fd

    monkeypatch.setattr(os, "open", open_then_holder_steps_aside)
    starter = lockfile.acquire(path)
    monkeypatch.undo()
    assert starter is not None
    try:
        assert len(opened) == 2  # it noticed and re-opened
        assert os.fstat(starter).st_ino == os.stat(path).st_ino
        assert lockfile.acquire(path) is None  # a third starter finds it held
    finally:
        os.close(starter)


_WORKER = textwrap.dedent("""
    import os, sys, time
    from envd_core.resident import lockfile
    path, marker, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    held = clashes = 0
    for _ in range(rounds):
        fd = lockfile.acquire(path)
        if fd is None:
            continue
        try:
            os.mkdir(marker)  # exists: another process believes it holds the lock too
        except FileExistsError:
            clashes += 1
        else:
            held += 1
            time.sleep(0.0002)
            os.rmdir(marker)
        lockfile.remove(fd, path, path[:-5] + ".sock")
    print(held, clashes)
""")


def test_processes_taking_and_removing_the_lock_never_hold_it_together(sockets: Path) -> None:
    """Four processes start "servers" (take the lock) and stop them (remove the files) in a
    loop: at no time may two hold the lock. Without the inode check after flock this clashes
    within a few hundred rounds."""
    path, marker = str(sockets / "resident-race.lock"), str(sockets / "inside")
    procs = [subprocess.Popen([sys.executable, "-c", _WORKER, path, marker, "400"],
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    results = [proc.communicate(timeout=120)[0].split() for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    held = sum(int(r[0]) for r in results)
    clashes = sum(int(r[1]) for r in results)
    assert held > 0
    assert clashes == 0
    assert not os.path.exists(path)


def test_servers_starting_while_one_stops_end_with_one_holding_the_named_lock(
        sockets: Path) -> None:
    """Two servers start while the one serving the key is asked to stop: afterwards at most
    one serves, and its lock is on the file the path names (a third start is refused)."""
    sock = sockets / f"resident-{KEY}.sock"
    first = _server(sockets, idle=300)
    procs = [first]
    try:
        _wait_answering(sock, first)
        procs += [_server(sockets, idle=300) for _ in range(2)]
        assert stop(str(sock)) == first.pid
        assert first.wait(timeout=30) == 0
        time.sleep(1.0)  # starters that lost the lock exit in well under that
        live = [p for p in procs[1:] if p.poll() is None]
        assert len(live) <= 1
        if live:
            _wait_answering(sock, live[0])
            assert lockfile.acquire(wire.lock_path(str(sock))) is None
            assert ask(str(sock), "status")["status"]["pid"] == live[0].pid  # type: ignore[index]
            assert stop(str(sock)) == live[0].pid
            assert live[0].wait(timeout=30) == 0
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
    assert _files(sockets) == []
