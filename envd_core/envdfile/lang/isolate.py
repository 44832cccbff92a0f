"""Run one evaluation on a thread with a known stack, in a forked child with rlimits.

Why a fork and not ``multiprocessing``/``subprocess``: the child starts with starlark, the
vendor's build functions and the parsed settings already in memory, so isolation costs a fork
and a pickle of the graph (measured in docs/limits.md) instead of a second interpreter start and
re-import; and vendor callables need not be picklable. Only the result travels back.

The child sets ``RLIMIT_AS`` to what it uses at the fork plus 1.5 times the memory limit (the
in-evaluation :class:`~envd_core.envdfile.lang.limits.Guard` stops gradual growth first, with a
position; the rlimit stops one statement that allocates gigabytes at once) and ``RLIMIT_CPU``
to the time limit plus a margin. The parent kills the child when the wall time limit has passed
by a margin (a statement stuck in native code never reaches a checkpoint). Any death of the
child becomes one :class:`BuildFileError` naming the limit and the file.

Not forked (evaluated in-process, on the same big-stack thread, under the guard only) when
``isolate`` is off or on platforms without ``fork``. A CLI process has no other thread when it
evaluates; a library caller may have some, and the child still forks then: it only runs
starlark, our built-ins, pickle and plain file writes, whose locks (the GIL, the import lock,
malloc's arenas) Python and glibc reset in the child. Python 3.12+ warns about such forks; the
warning is silenced here for that reason.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import pickle
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from envd_core.envdfile.errors import BuildFileError
from envd_core.envdfile.lang.limits import EvalLimits, format_size, limit_message

T = TypeVar("T")
#: Seconds past the time limit before the parent kills a child that stopped answering.
KILL_GRACE = 5.0
_ALLOC_FAILED = (b"memory allocation of", b"MemoryError", b"Cannot allocate memory")


def on_big_stack(func: Callable[[], T], limits: EvalLimits) -> T:
    """Call ``func`` on a thread whose native stack fits ``limits.depth`` nesting levels."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = func()
        except BaseException as exc:  # noqa: BLE001  # re-raised in the caller's thread
            box["error"] = exc

    old = threading.stack_size()
    threading.stack_size(limits.stack_size())
    try:
        thread = threading.Thread(target=run, name="envd-eval", daemon=True)
        thread.start()
    finally:
        threading.stack_size(old)
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]  # type: ignore[no-any-return]


#: Run (then forgotten) in the parent as soon as the next evaluation child is forked, or at
#: once when evaluation does not fork. What must not exist in a process while it forks waits
#: for this: a gRPC channel's core threads (the early connection, pipeline/early.py) made the
#: forked child crash with SIGSEGV when they were running at the fork.
_AFTER_FORK: list[Callable[[], None]] = []


def after_next_fork(callback: Callable[[], None]) -> None:
    """Call ``callback`` in this process once the next evaluation has forked its child (or at
    once when it does not fork); see :data:`_AFTER_FORK`."""
    _AFTER_FORK.append(callback)


def _forked() -> None:
    callbacks, _AFTER_FORK[:] = list(_AFTER_FORK), []
    for callback in callbacks:
        callback()


def should_fork(limits: EvalLimits) -> bool:
    """Fork when isolation is on and the platform has ``fork``."""
    return limits.isolate and hasattr(os, "fork")


def run_limited(func: Callable[[], T], limits: EvalLimits, file: str) -> T:
    """``func()`` under ``limits``: forked with rlimits when :func:`should_fork`, else on a
    big-stack thread in this process. ``file`` names the build file in errors."""
    if not should_fork(limits):
        _forked()  # nothing is forked: nothing to wait for
        return on_big_stack(func, limits)
    with _private_dir() as tmp:
        result_path = os.path.join(tmp, "result")
        stderr_path = os.path.join(tmp, "stderr")
        sys.stdout.flush()
        sys.stderr.flush()
        # The child holds the write end until it exits: EOF on the read end wakes the parent
        # at once, without polling.
        done_r, done_w = os.pipe()
        pid = -1
        # Objects that exist now are never collected in the child: a collection would write to
        # every one of them and copy the whole heap page by page.
        gc.freeze()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                pid = os.fork()
        finally:
            if pid != 0:
                gc.unfreeze()
        if pid == 0:  # the child: never returns
            os.close(done_r)
            _AFTER_FORK.clear()
            _child(func, limits, result_path, stderr_path)
        os.close(done_w)
        _forked()
        try:
            status = _wait(pid, done_r, limits)
        finally:
            os.close(done_r)
        captured = _read(stderr_path)
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 and os.path.exists(result_path):
            with open(result_path, "rb") as fh:
                outcome = pickle.load(fh)
            _relay(captured)
            return _unpack(outcome)  # type: ignore[no-any-return]
        raise _death(status, captured, limits, file)


@contextlib.contextmanager
def _private_dir() -> Iterator[str]:
    """A 0700 directory for the child's result and stderr. Not ``tempfile``: its import (with
    ``random`` and ``shutil``) measured ~100 ms on the loaded 2-core CI machine."""
    base = os.environ.get("TMPDIR") or "/tmp"
    path = os.path.join(base, f"envd-eval-{os.getpid()}-{time.monotonic_ns()}")
    os.mkdir(path, 0o700)
    try:
        yield path
    finally:
        for name in ("result", "stderr"):
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(path, name))
        with contextlib.suppress(OSError):
            os.rmdir(path)


def _child(func: Callable[[], Any], limits: EvalLimits, result_path: str,
           stderr_path: str) -> None:
    code = 3
    try:
        fd = os.open(stderr_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(fd, 2)
        os.close(fd)
        # An abort on a failed allocation is expected here; faulthandler (pytest enables it)
        # would print a Python traceback for it on the parent's terminal.
        import faulthandler

        faulthandler.disable()
        _set_rlimits(limits)
        try:
            outcome: tuple[str, Any] = ("ok", on_big_stack(func, limits))
        except BaseException as exc:  # noqa: BLE001  # every outcome goes back to the parent
            if _is_allocation_failure(exc):
                os._exit(4)
            outcome = ("error", _pack_error(exc))
        data = pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        with open(result_path, "wb") as fh:
            fh.write(data)
        code = 0
    except MemoryError:
        code = 4
    except BaseException:  # noqa: BLE001  # reported by the parent from the exit code
        code = 3
    finally:
        os._exit(code)


def _is_allocation_failure(exc: BaseException) -> bool:
    """Under ``RLIMIT_AS`` a failed allocation surfaces as MemoryError, or as a Rust panic
    (pyo3's PanicException, whose module cannot be imported in the parent)."""
    if isinstance(exc, MemoryError):
        return True
    text = f"{type(exc).__name__}: {exc}".lower()
    return type(exc).__name__ == "PanicException" and any(
        word in text for word in ("alloc", "capacity", "memory")
    )


def _set_rlimits(limits: EvalLimits) -> None:
    import resource

    used = _virtual_bytes()
    # 1.5 times the limit: Vec doubling and the allocator reserve address space before it is
    # resident, so the guard (which sees resident memory, with a position) fires first when it
    # can. It cannot always: starlark-rust reaches a checkpoint only every ~1,000 iterations,
    # and 1,000 iterations of `x.append("a" * 1000000)` are 1 GB; the rlimit is the hard bound.
    cap = used + limits.memory * 3 // 2 + limits.stack_size()
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    cpu = int(limits.time) + int(KILL_GRACE)
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5))


def _virtual_bytes() -> int:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _wait(pid: int, done_fd: int, limits: EvalLimits) -> int:
    """Wait for the child; kill it once the time limit has passed by :data:`KILL_GRACE`."""
    import select

    deadline = time.monotonic() + limits.time + KILL_GRACE
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                os.kill(pid, signal.SIGKILL)
                return os.waitpid(pid, 0)[1] | 0x10000  # marks "killed by us"
            readable, _, _ = select.select([done_fd], [], [], min(left, 1.0))
            if readable and not os.read(done_fd, 1):  # EOF: the child has exited
                return os.waitpid(pid, 0)[1]
    except BaseException:  # Ctrl-C: the child must not outlive us
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        raise


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except OSError:
        return b""


def _relay(captured: bytes) -> None:
    """What the evaluation wrote to stderr (a vendor function's warnings) reaches the user."""
    if captured:
        sys.stderr.flush()
        with contextlib.suppress(OSError):
            os.write(2, captured)


def _death(status: int, captured: bytes, limits: EvalLimits, file: str) -> BuildFileError:
    killed_by_us = bool(status & 0x10000)
    status &= 0xFFFF
    signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    out_of_memory = any(marker in captured for marker in _ALLOC_FAILED) or (
        os.WIFEXITED(status) and os.WEXITSTATUS(status) == 4)
    if killed_by_us or signum == signal.SIGXCPU:
        message, hint = limit_message("time", limits)
    elif out_of_memory or signum == signal.SIGKILL:
        message, hint = limit_message("memory", limits)
        message = message.replace(
            "used more than", "tried to allocate beyond"
        ) if out_of_memory else message
    elif signum == signal.SIGSEGV:
        message = (f"evaluation crashed (segmentation fault) although nesting stays under "
                   f"{limits.depth} levels; please report this file")
        hint = "lower the depth limit with ENVD_BUILD_LIMITS=depth=N"
    else:
        what = f"signal {signum}" if signum else f"exit code {os.WEXITSTATUS(status)}"
        message = f"evaluation failed unexpectedly ({what}) with {format_size(limits.memory)} "
        message += "of memory allowed"
        hint = "run again with --debug and report it"
    return BuildFileError(message, file=file, hint=hint)


def _pack_error(exc: BaseException) -> tuple[str, str, tuple[Any, ...], dict[str, Any]]:
    """An exception as (module, class, args, attributes): errors with keyword-only
    constructors (every EnvdError) do not survive a plain pickle round trip."""
    cls = type(exc)
    state = dict(getattr(exc, "__dict__", {}))
    try:
        pickle.dumps((exc.args, state))
        return cls.__module__, cls.__qualname__, exc.args, state
    except Exception:  # noqa: BLE001  # an unpicklable attribute: keep the text
        return ("builtins", "RuntimeError",
                (f"{cls.__name__}: {exc}",), {})


def _unpack(outcome: tuple[str, Any]) -> Any:
    kind, value = outcome
    if kind == "ok":
        return value
    module, qualname, args, state = value
    cls: Any
    try:
        cls = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
    except (ImportError, AttributeError):  # a class that exists only in the child
        raise RuntimeError(f"{qualname}: {args[0] if args else ''}") from None
    error = cls.__new__(cls)
    BaseException.__init__(error, *args)
    error.__dict__.update(state)
    raise error
