"""The resident process' pieces that need no server: framing, key, allowlist, socket-dir safety,
exit statuses, stale-code detection, the client's import cost."""

from __future__ import annotations

import importlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from envd_core.resident import wire
from envd_core.resident.client import command_of, eligible
from envd_core.resident.fresh import Fingerprint

# -- framing -------------------------------------------------------------------------------


def _chunked(data: bytes, size: int):  # type: ignore[no-untyped-def]
    view = memoryview(data)

    def recv(n: int) -> bytes:
        nonlocal view
        chunk, view = bytes(view[:min(n, size)]), view[min(n, size):]
        return chunk

    return recv


def test_a_frame_round_trips_through_any_chunking() -> None:
    message = {"op": "run", "argv": ["envd", "build"], "env": {"A": "é" * 1000}, "umask": 18,
               "t0": 1.5}
    data = wire.encode(message)
    for size in (1, 3, 7, 4096):
        assert wire.read_frame(_chunked(data, size)) == message
    # the first bytes may have come with the ancillary data already
    assert wire.read_frame(_chunked(data[10:], 5), data[:10]) == message


def test_a_clean_end_of_stream_is_none_and_a_cut_frame_an_error() -> None:
    assert wire.read_frame(_chunked(b"", 1)) is None
    data = wire.encode({"op": "status"})
    with pytest.raises(ValueError, match="inside a frame"):
        wire.read_frame(_chunked(data[:-1], 4))
    with pytest.raises(ValueError, match="header"):
        wire.read_frame(_chunked(data[:2], 4))


def test_oversized_and_malformed_frames_are_refused() -> None:
    with pytest.raises(ValueError, match="larger than"):
        wire.read_frame(_chunked((wire.MAX_FRAME + 1).to_bytes(4, "big"), 4))
    with pytest.raises(ValueError, match="not a mapping"):
        wire.decode(__import__("marshal").dumps([1, 2]))
    with pytest.raises(ValueError, match="malformed"):
        wire.decode(b"\xff\x00garbage")


def test_fds_travel_as_native_ints() -> None:
    assert wire.fds_from(wire.fds_payload([0, 1, 2, 1023])) == [0, 1, 2, 1023]


# -- key and places ------------------------------------------------------------------------


def test_the_key_separates_interpreters_and_paths() -> None:
    base = wire.key("/venv/bin/python", ["/venv/bin", "/venv/lib/site-packages"])
    assert base == wire.key("/venv/bin/python", ["/venv/bin", "/venv/lib/site-packages"])
    assert len(base) == 8 and int(base, 16) >= 0
    assert base != wire.key("/other/bin/python", ["/venv/bin", "/venv/lib/site-packages"])
    assert base != wire.key("/venv/bin/python", ["/venv/bin", "/venv/lib/site-packages", "/x"])


def test_relative_sys_path_entries_keep_the_resident_out() -> None:
    assert wire.usable_path(["/a", "/b"])
    assert not wire.usable_path(["", "/b"])
    assert not wire.usable_path(["rel", "/b"])


def test_socket_dir_precedence() -> None:
    assert wire.socket_dir({"ENVD_RESIDENT_DIR": "/x/y", "XDG_RUNTIME_DIR": "/run/u"}) == "/x/y"
    assert wire.socket_dir({"XDG_RUNTIME_DIR": "/run/user/7"}) == "/run/user/7/envd"
    assert wire.socket_dir({"XDG_RUNTIME_DIR": "relative"}) == f"/tmp/envd-{os.geteuid()}"
    assert wire.socket_dir({}) == f"/tmp/envd-{os.geteuid()}"


def test_a_socket_path_too_long_for_af_unix_is_none(tmp_path: Path) -> None:
    assert wire.socket_path("/tmp/s", "0123abcd") == "/tmp/s/resident-0123abcd.sock"
    assert wire.socket_path("/" + "d" * 100, "0123abcd") is None


def test_the_socket_dir_must_be_ours_private_and_real(tmp_path: Path) -> None:
    made = tmp_path / "a" / "envd"
    assert wire.check_dir(str(made), create=True) is None
    assert made.stat().st_mode & 0o777 == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    assert "open to other users" in (wire.check_dir(str(loose), create=False) or "")
    link = tmp_path / "link"
    link.symlink_to(made)
    assert "not a directory" in (wire.check_dir(str(link), create=True) or "")
    file = tmp_path / "file"
    file.write_text("")
    assert wire.check_dir(str(file), create=False) is not None
    assert "No such file" in (wire.check_dir(str(tmp_path / "none"), create=False) or "")


def test_idle_and_disable_switches() -> None:
    assert wire.idle_seconds({}) == wire.DEFAULT_IDLE
    assert wire.idle_seconds({"ENVD_RESIDENT_IDLE": "30"}) == 30
    assert wire.idle_seconds({"ENVD_RESIDENT_IDLE": "soon"}) == wire.DEFAULT_IDLE
    for value in ("0", "false", "No", "off"):
        assert wire.disabled({"ENVD_RESIDENT": value})
    assert not wire.disabled({"ENVD_RESIDENT": "1"}) and not wire.disabled({})


# -- exit statuses ---------------------------------------------------------------------------


def _status_of(code: str) -> int:
    proc = subprocess.Popen([sys.executable, "-c", code])
    _pid, status = os.waitpid(proc.pid, 0)
    proc.returncode = 0  # reaped here
    return status


def test_exit_codes_map_as_a_shell_reports_them() -> None:
    assert wire.exit_code(_status_of("raise SystemExit(3)")) == 3
    assert wire.exit_code(_status_of("pass")) == 0
    killed = _status_of("import os, signal; os.kill(os.getpid(), signal.SIGTERM)")
    assert wire.exit_code(killed) == 128 + signal.SIGTERM
    killed = _status_of("import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert wire.exit_code(killed) == 137


# -- which invocations go resident ------------------------------------------------------------


@pytest.mark.parametrize(("argv", "served"), [
    (["build"], True),
    (["--context", "x", "build", "--output", "type=image,name=a,push=true"], True),
    (["--debug", "build"], False),  # grpc's debug logs are read at import: direct
    (["--context=x", "images", "ls"], True),
    (["up", "--detach"], True),
    (["run", "--detach", "--", "cmd"], True),
    (["up"], False),
    (["run", "--", "--detach"], False),  # after `--` it is the command's argument
    (["exec", "env"], False),
    (["login"], False),
    (["completion", "bash"], False),
    (["init"], False),
    (["resident", "status"], False),
    (["--help"], False),
    ([], False),
    (["down"], True),
    (["context", "create", "--name", "x"], True),
    (["envs", "describe", "x"], True),
    (["prune"], True),
])
def test_the_allowlist(argv: list[str], served: bool) -> None:
    assert eligible(argv, {}) is served


def test_disabled_or_completion_is_never_served() -> None:
    assert not eligible(["build"], {"ENVD_RESIDENT": "0"})
    assert not eligible(["build"], {"_ENVD_COMPLETE": "bash_complete"})
    assert not eligible(["build"], {"GRPC_TRACE": "http"})
    assert not eligible(["build"], {"GRPC_VERBOSITY": "debug"})
    assert not eligible(["build"], {"ENVD_DEBUG": "1"})
    assert eligible(["build"], {"GRPC_VERBOSITY": "NONE"})


def test_command_of_skips_global_options() -> None:
    assert command_of(["--context", "a", "--debug", "build", "-x"]) == ("build", ["-x"])
    assert command_of(["--version"]) == (None, [])


# -- stale code -------------------------------------------------------------------------------


def test_an_edited_loaded_module_is_detected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             ) -> None:
    module = tmp_path / "resident_fresh_probe.py"
    module.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("resident_fresh_probe")
    try:
        print_ = Fingerprint.take()
        assert str(module) in print_.files
        assert print_.fresh()
        stat = module.stat()
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        assert print_.changed() == str(module)
        again = Fingerprint.take()
        module.write_text("X = 2\n")  # same size, and the old mtime put back: the ctime moved
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
        assert again.changed() == str(module)
    finally:
        sys.modules.pop("resident_fresh_probe", None)


def test_site_packages_modules_are_not_watched_one_by_one() -> None:
    import click

    assert os.path.realpath(click.__file__) not in Fingerprint.take().files


# -- the client's cost ------------------------------------------------------------------------


def test_the_client_imports_only_built_in_modules() -> None:
    probe = textwrap.dedent("""
        import json, sys
        before = set(sys.modules)
        import envd_core.resident.client
        from envd_core.resident.client import eligible, endpoint
        import os
        eligible(["build"], os.environ)
        endpoint(os.environ)
        print(json.dumps(sorted(set(sys.modules) - before)))
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, timeout=60)
    added = set(json.loads(done.stdout))
    outside = {name for name in added if not name.startswith("envd_core")}
    assert outside <= {"marshal", "__future__"}, outside  # __future__: every envd module
    assert "socket" not in added and "signal" not in added and "enum" not in added


def test_a_client_in_another_mount_namespace_gets_a_server_of_its_own() -> None:
    """A command under ``unshare --mount`` (a bind-mounted service-account token) must not run
    in a server forked outside it: the key covers the namespaces, root and cgroup."""
    import shutil

    code = ("import sys; from envd_core.resident import wire; "
            "print(wire.key('/venv/bin/python', ['/venv/lib']))")
    here = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout
    again = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True).stdout
    assert here == again  # stable for the same installation and process context
    unshare = shutil.which("unshare")
    if unshare is None or os.geteuid() != 0:
        # no unshare as an unprivileged user: show the same through the context itself
        assert len(wire.process_context()) == 9
        return
    inside = subprocess.run([unshare, "--mount", "--propagation", "private", sys.executable,
                             "-c", code], capture_output=True, text=True, check=True).stdout
    assert inside != here


def test_a_child_reports_its_exit_before_its_teardown_with_its_stdio_let_go() -> None:
    """child._report_exit: the client gets the code on the connection, marked early, and the
    child's stdout no longer holds the client's pipe (a reader sees its end with the client's)."""
    import socket

    from envd_core.resident.child import _report_exit

    ours, theirs = socket.socketpair()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the command's child: stdout is the client's pipe until the report
        try:
            ours.close()
            os.dup2(write_end, 1)
            os.close(write_end)
            os.write(1, b"before\n")
            _report_exit(3, theirs.fileno())
            os.write(1, b"after\n")  # /dev/null now
        finally:
            os._exit(3)
    theirs.close()
    os.close(write_end)
    ours.settimeout(30)
    assert wire.read_frame(ours.recv) == {"exit": 3, "early": True}
    with os.fdopen(read_end, "rb") as pipe:
        assert pipe.read() == b"before\n"
    _, status = os.waitpid(pid, 0)
    assert wire.exit_code(status) == 3
    ours.close()


def test_the_child_takes_the_clients_environment_exactly() -> None:
    """child._take_environment: removed, changed and added variables, in os.environ and in the
    C environment that grpc and the docker SDK's C code read (checked with libc's getenv)."""
    import ctypes

    from envd_core.resident.child import _take_environment

    libc = ctypes.CDLL(None)
    libc.getenv.restype = ctypes.c_char_p
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.environ.update(ENVD_T_GONE="1", ENVD_T_SAME="s", ENVD_T_CHANGED="old")
            wanted = {k: v for k, v in os.environ.items() if k != "ENVD_T_GONE"}
            wanted.update(ENVD_T_CHANGED="new", ENVD_T_ADDED="a")
            _take_environment(wanted)
            seen = {k: (libc.getenv(k.encode()) or b"").decode() for k in
                    ("ENVD_T_GONE", "ENVD_T_SAME", "ENVD_T_CHANGED", "ENVD_T_ADDED")}
            same = dict(os.environ) == wanted
            os.write(write_end, json.dumps([same, seen]).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        same, seen = json.loads(pipe.read())
    os.waitpid(pid, 0)
    assert same
    assert seen == {"ENVD_T_GONE": "", "ENVD_T_SAME": "s", "ENVD_T_CHANGED": "new",
                    "ENVD_T_ADDED": "a"}
