"""The forked child: become the client's process, then run the normal CLI.

After :func:`os.fork` the child has the server's imports and nothing of the client. It takes,
in this order, everything a process started by the client's shell would have had:

1. a session of its own (``setsid``): the server's signals and terminal are not its;
2. the client's stdin, stdout and stderr (received with SCM_RIGHTS) on fds 0, 1 and 2;
3. Python's default signal dispositions (SIGINT raises KeyboardInterrupt, SIGPIPE ignored as the
   interpreter sets it at start-up, the rest default);
4. the client's environment, replacing ours wholesale (``os.environ`` calls ``putenv``, so C
   code reading ``GRPC_*`` or ``DOCKER_*`` sees it too), working directory, umask and argv;
5. the locale of that environment (``LC_CTYPE``) and ``sys.stdin/stdout/stderr`` rebuilt as the
   interpreter builds them at start-up: encoding from ``PYTHONIOENCODING`` / UTF-8 mode / the
   locale, line buffering on a terminal, stderr always line buffered.

Then the CLI runs exactly as :func:`envd_core.cli.main` would run it directly (under cProfile,
written to ``$ENVD_RESIDENT_PROFILE``, when that is set), and the process
ends with ``os._exit`` (never returning into the server's loop), after the steps of a normal
exit (:func:`envd_core.cli.app.exit_now`).

Its last step before ``os._exit`` (:func:`_report_exit`): stdin, stdout and stderr are pointed
at ``/dev/null`` (so the client's reader sees the end of its output as soon as the client
ends) and the exit status goes straight to the client on the request's connection, marked
``early``. The kernel's teardown of a process forked from the ~50 MB server then takes
6-9 ms of CPU (unmapping its pages), and the server's reap comes after that; the client no
longer waits for either. It answers ``.`` so the server does not take its going away for
Ctrl-C. A command that ends any other way (an uncaught exception, ``sys.exit`` before the
CLI ran) is reported by the server when it reaps the child, as before.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
import sys
from typing import Any, NoReturn


def _reset_signals() -> None:
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD, signal.SIGUSR1,
                signal.SIGUSR2, signal.SIGALRM):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as the interpreter has it at start-up


def _encoding(env: dict[str, str]) -> tuple[str, str | None]:
    """The stdio encoding (and errors) the interpreter would pick under ``env``."""
    import locale

    forced = env.get("PYTHONIOENCODING")
    if forced:
        name, _, errors = forced.partition(":")
        if name:
            return name, errors or None
    ctype = env.get("LC_ALL") or env.get("LC_CTYPE") or env.get("LANG") or "C"
    if env.get("PYTHONUTF8") == "1" or sys.flags.utf8_mode:
        return "utf-8", None
    if ctype in ("C", "POSIX"):  # PEP 538/540: the C locale is coerced to UTF-8
        return "utf-8", "surrogateescape"
    return locale.getpreferredencoding(False), None


def _stdio(env: dict[str, str]) -> None:
    encoding, errors = _encoding(env)

    def stream(fd: int, mode: str, err: str | None) -> io.TextIOWrapper:
        raw: Any = io.FileIO(fd, mode, closefd=False)
        tty = raw.isatty()
        buffered: Any = (io.BufferedReader(raw) if mode == "r" else io.BufferedWriter(raw))
        return io.TextIOWrapper(buffered, encoding=encoding, errors=err,
                                line_buffering=(tty or fd == 2) and mode == "w",
                                write_through=fd == 2)

    # sys.__stdin__ and friends are Final to mypy; the interpreter sets them at start-up and
    # so must we (code restoring sys.stdout from them would get the server's log otherwise)
    streams: Any = sys
    try:
        sys.stdin = streams.__stdin__ = stream(0, "r", errors)
    except OSError:  # a closed stdin stays as the interpreter leaves it: None
        sys.stdin = streams.__stdin__ = None
    sys.stdout = streams.__stdout__ = stream(1, "w", errors)
    sys.stderr = streams.__stderr__ = stream(2, "w", "backslashreplace")


def _take_environment(env: dict[str, str]) -> None:
    """Make ``os.environ`` (and with it the C environment: its setters call ``putenv`` and
    ``unsetenv``) exactly ``env``, touching only what differs: the client's environment is
    mostly the server's, and clearing then refilling it cost ~1.5 ms and ~180 copy-on-write
    faults per command. The server never changes its environment but through ``os.environ``
    (docs/resident.md: no reads or writes of it at import), so the two agree on every key."""
    current = os.environ
    for key in [key for key in current if key not in env]:
        del current[key]
    for key, value in env.items():
        if current.get(key) != value:
            current[key] = value


def become_client(request: dict[str, Any], fds: list[int]) -> None:
    """Turn this freshly forked process into the client's (steps 1-5 above)."""
    import locale

    os.setsid()
    for target, fd in enumerate(fds[:3]):
        if fd != target:
            os.dup2(fd, target)
    for fd in fds[:3]:
        if fd > 2 and fd not in fds[:3][: fds.index(fd)]:
            os.close(fd)
    _reset_signals()
    env = {str(k): str(v) for k, v in request["env"].items()}
    _take_environment(env)
    os.chdir(request["cwd"])
    os.umask(int(request["umask"]))
    sys.argv = [str(a) for a in request["argv"]]
    sys.path[:] = [str(p) for p in request["path"]]
    try:
        locale.setlocale(locale.LC_CTYPE, "")
    except locale.Error:
        locale.setlocale(locale.LC_CTYPE, "C")
    _stdio(env)


def _start_timings(request: dict[str, Any]) -> None:
    """With ``ENVD_TIMINGS``, measure from the client's start: the first phase is the client
    and the hand-off to this child (what interpreter+imports+cli is for a direct run)."""
    from envd_core import timings

    if timings.enabled():
        timings.begin_at(float(request["t0"]), float(request["e0"]),
                         "client + resident handoff")


def _report_exit(code: int, report_fd: int) -> None:
    """Leave the client's stdio and send it ``code`` before the kernel's teardown (module doc).

    The write is blocking (a frame of a few bytes): a short write would leave half a frame
    before the server's own report. A client already gone is no error: the server reports to
    nobody either.
    """
    from envd_core.resident import wire

    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    os.set_blocking(report_fd, True)
    data = wire.encode({"exit": code, "early": True})
    with contextlib.suppress(OSError):
        while data:
            data = data[os.write(report_fd, data):]


def run(request: dict[str, Any], fds: list[int], report_fd: int | None = None) -> NoReturn:
    """Run the client's command in this child and end the process with its exit code; with
    ``report_fd`` (the request's connection) the client gets the code before the teardown."""
    code = 1
    try:
        become_client(request, fds)
        _start_timings(request)
        from envd_core import timings
        from envd_core.cli.app import create_cli, exit_now
        from envd_core.cli.app import run as run_cli
        from envd_core.cli.fast import wants_index

        args = sys.argv[1:]
        factory = None
        if wants_index(args):
            from envd_core.cli.app import _indexed_plugins

            factory = _indexed_plugins
        profile_to = os.environ.get("ENVD_RESIDENT_PROFILE")
        if profile_to:  # what a command costs once every module is imported (bench/README)
            import cProfile

            profiler = cProfile.Profile()
            code = profiler.runcall(run_cli, create_cli(factory), args)
            profiler.dump_stats(profile_to)
        else:
            code = run_cli(create_cli(factory), args)
        timings.dump()
        exit_now(code, None if report_fd is None else (
            lambda: _report_exit(code, report_fd)))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported on the client's stderr, then exit 1
        import traceback

        with contextlib.suppress(Exception):  # stderr is gone: nothing left to tell
            traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed pipe: nothing to save
                if stream is not None:
                    stream.flush()
    os._exit(code)
