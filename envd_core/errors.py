"""Every error envd reports on purpose: one tree rooted at :class:`EnvdError`.

Each class carries an exit code and a default :class:`ErrorKind`; an instance may narrow the kind
(``BuilderError(..., kind=ErrorKind.REFUSED)``). Callers branch on ``exc.kind``, never on the
message and never with ``getattr``: every ``EnvdError`` has one.

The CLI prints ``envd: <message>`` on one line (plus ``hint: …``, if any) and exits with the
class's code. A traceback is shown only with ``--debug``. Messages name the thing, the cause and
the fix, with the offending value in backticks. :func:`one_line` is the one place that keeps a
message on one line.

The tree::

    EnvdError                    exit 1, kind error
    ├── UsageError               exit 2, kind usage       the command line itself is wrong
    ├── ValidationError          exit 2, kind invalid     a value the user gave is unusable
    │   └── BuildOptionError     (envd_core.envdfile.errors) a malformed build flag
    ├── PluginError              exit 1, kind plugin      a plugin failed to load or misbehaved
    ├── ContextError             exit 1, kind error       not-found / conflict when known
    ├── StoreError               exit 1, kind store       the context store cannot be used
    ├── BuilderError             exit 1, kind unavailable a builder cannot be reached or failed
    │   └── BuildkitConnectionError (envd_core.buildkit.errors) refused, dns, timeout, tls, …
    ├── BuildError               exit 1, kind build       a build failed
    │   └── BuildFileError …     (envd_core.envdfile.errors)
    └── RunnerError              exit 1, kind runner      a runner cannot be reached or failed
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing is not imported at run time: every command imports this module
if TYPE_CHECKING:
    from typing import ClassVar

    from envd_core.error_kinds import ErrorKind as ErrorKind

__all__ = [
    "BuildError", "BuilderError", "ContextError", "EnvdError", "ErrorKind", "PluginError",
    "RunnerError", "StoreError", "UsageError", "ValidationError", "one_line",
]


def __getattr__(name: str) -> object:
    # ErrorKind is built on first use (envd_core.error_kinds says why)
    if name == "ErrorKind":
        from envd_core.error_kinds import ErrorKind

        return ErrorKind
    raise AttributeError(f"module 'envd_core.errors' has no attribute {name!r}")


class EnvdError(Exception):
    """Base of all envd errors: a one-line message, an optional hint, a kind and an exit code."""

    #: Process exit code when this error ends a command.
    exit_code: ClassVar[int] = 1
    #: Kind of the instances of this class unless the constructor is given another (an
    #: :class:`ErrorKind` value: the enum is built when the first error is).
    default_kind: ClassVar[str] = "error"

    def __init__(
        self, message: str, *, hint: str | None = None, kind: ErrorKind | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if kind is None:
            from envd_core.error_kinds import ErrorKind

            kind = ErrorKind(self.default_kind)
        self.kind: ErrorKind = kind

    def __str__(self) -> str:
        return self.message


class UsageError(EnvdError):
    """The command line itself is wrong (bad flag value, missing argument)."""

    exit_code = 2
    default_kind = "usage"


class PluginError(EnvdError):
    """A plugin is broken: it failed to load or returned something the core cannot use."""

    default_kind = "plugin"


class ContextError(EnvdError):
    """A context does not exist, already exists, or cannot be used.

    Raise it with ``kind=ErrorKind.NOT_FOUND`` or ``kind=ErrorKind.CONFLICT`` when that is the
    reason, so callers can tell them apart.
    """


class ValidationError(EnvdError):
    """A value given by the user (name, address, option) is not acceptable."""

    exit_code = 2
    default_kind = "invalid"


class StoreError(EnvdError):
    """The context store cannot be read or written (corrupt file, permissions, lock)."""

    default_kind = "store"


class BuilderError(EnvdError):
    """A builder cannot be reached or failed (see :class:`ErrorKind` for the reasons)."""

    default_kind = "unavailable"


class BuildError(EnvdError):
    """A build failed: bad build file, failing step, export failure.

    Besides the message and hint, a failure the daemon reported carries what a report (the
    ``envd:`` line, ``--progress json``, ``--format json``) needs, so no caller parses the text:

    * ``stage``: where it failed: ``step`` (a command exited non-zero), ``pull`` (a base
      image), ``export``, ``push``, ``session`` (the link back to envd broke) or ``solve``;
    * ``step``: the failed step's name; ``exit_status``: its exit code, when it ran one;
    * ``log_tail``: the step's last log lines, one string per line (never joined);
    * ``cause``: the name of the recognised cause (``tls-verify``, ``package-not-found``…),
      from :mod:`envd_core.pipeline.causes`; ``detail``: the daemon's own first line.
    """

    default_kind = "build"

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        kind: ErrorKind | None = None,
        stage: str = "solve",
        step: str | None = None,
        exit_status: int | None = None,
        log_tail: tuple[str, ...] = (),
        cause: str | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint, kind=kind)
        self.stage = stage
        self.step = step
        self.exit_status = exit_status
        self.log_tail = tuple(log_tail)
        self.cause = cause
        self.detail = detail

    def to_dict(self) -> dict[str, object]:
        """The failure as plain data (the ``error`` object of the JSON outputs)."""
        return {
            "message": self.message,
            "hint": self.hint,
            "kind": str(self.kind),
            "stage": self.stage,
            "step": self.step,
            "exit_code": self.exit_status,
            "log_tail": list(self.log_tail),
            "cause": self.cause,
            "detail": self.detail,
        }


class RunnerError(EnvdError):
    """A runner cannot be reached or failed."""

    default_kind = "runner"


def one_line(text: str) -> str:
    """``text`` with every non-printable character escaped, so it prints as one safe line.

    Line breaks of every sort (``\\n``, ``\\r``, ``\\x85``, ``\\u2028``…), tabs and terminal
    control sequences (``\\x1b[31m``) become their Python escapes (``\\n``, ``\\x1b``…); spaces
    and printable non-ASCII text (``café``, ``构建``) stay as they are. A user value echoed in an
    error therefore can neither split the line nor repaint the terminal.
    """
    if text.isprintable():
        return text
    return "".join(
        ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text
    )
