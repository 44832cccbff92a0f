"""What went wrong, for code that must react: :class:`ErrorKind`.

Re-exported by :mod:`envd_core.errors`, where every error carries one. A module of its own
because building an enum of seventeen members is the dearest part of importing the error tree
(~1.6 M instructions, ``valgrind --tool=callgrind``, more than any other module of a quick
command), and the quick commands (``envd context ls``, ``envd envs ls``) import the error
classes on every run but build an error only when something fails.
"""

from __future__ import annotations

import enum


class ErrorKind(str, enum.Enum):
    """What went wrong, for code that must react (status rows, retries, auto-bootstrap).

    A ``str`` enum, so ``exc.kind == "refused"`` and JSON output keep working with plain strings.
    """

    #: Nothing more specific is known.
    ERROR = "error"
    #: The command line is wrong.
    USAGE = "usage"
    #: A value the user gave is not acceptable.
    INVALID = "invalid"
    #: The named thing (context, file, daemon) does not exist.
    NOT_FOUND = "not-found"
    #: The named thing already exists, or is in use.
    CONFLICT = "conflict"
    #: A plugin is broken.
    PLUGIN = "plugin"
    #: No installed plugin provides the builder or runner type a context names.
    PLUGIN_MISSING = "plugin-missing"
    #: The asked operation is not something this builder/runner type can do.
    UNSUPPORTED = "unsupported"
    #: The context store cannot be read or written.
    STORE = "store"
    #: Nothing listens at the address (connection refused, socket missing).
    REFUSED = "refused"
    #: The host name does not resolve.
    DNS = "dns"
    #: No answer in time.
    TIMEOUT = "timeout"
    #: The TLS handshake failed (the message says which side rejected which certificate).
    TLS = "tls"
    #: Something answers, but it is not BuildKit's gRPC API.
    NOT_BUILDKIT = "not-buildkit"
    #: The daemon is unusable for another reason.
    UNAVAILABLE = "unavailable"
    #: A build step, the build file or an export failed.
    BUILD = "build"
    #: A runner failed.
    RUNNER = "runner"

    def __str__(self) -> str:  # f"{kind}" prints "refused", not "ErrorKind.REFUSED"
        return self.value

    @classmethod
    def parse(cls, value: ErrorKind | str | None) -> ErrorKind | None:
        """``value`` as a kind; an unknown string becomes :attr:`ERROR`, ``None`` stays ``None``."""
        if value is None or isinstance(value, ErrorKind):
            return value
        try:
            return cls(value)
        except ValueError:
            return cls.ERROR
