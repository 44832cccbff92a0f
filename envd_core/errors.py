"""Every error envd reports on purpose.

Each class maps to an exit code; the CLI prints ``envd: <message>`` on one line (plus the hint,
if any) and exits. A traceback is shown only with ``--debug``. Messages name the thing, the cause
and the fix, with the offending value in backticks.
"""

from __future__ import annotations


class EnvdError(Exception):
    """Base of all envd errors: a message for the user and an exit code."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(EnvdError):
    """The command line itself is wrong (bad flag value, missing argument)."""

    exit_code = 2


class PluginError(EnvdError):
    """A plugin is broken: it failed to load or returned something the core cannot use."""


class ContextError(EnvdError):
    """A context does not exist, already exists, or cannot be used."""


class ValidationError(EnvdError):
    """A value given by the user (name, address, option) is not acceptable."""

    exit_code = 2


class StoreError(EnvdError):
    """The context store cannot be read or written (corrupt file, permissions, lock)."""


class BuilderError(EnvdError):
    """A builder cannot be reached or failed."""


class BuildError(EnvdError):
    """A build failed: bad build file, failing step, export failure."""


class RunnerError(EnvdError):
    """A runner cannot be reached or failed."""
