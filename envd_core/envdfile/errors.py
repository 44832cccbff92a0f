"""Errors raised while reading build files and build options.

All derive from :mod:`envd_core.errors` so the CLI prints them as one line. Build-file errors carry
the location separately so the CLI can show the caret excerpt under ``--debug`` only.
"""

from __future__ import annotations

from envd_core.errors import BuildError, ValidationError, one_line


class BuildFileError(BuildError):
    """A build file cannot be evaluated: syntax, unknown name, failing call, bad load()."""

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        line: int | None = None,
        column: int | None = None,
        excerpt: str | None = None,
        hint: str | None = None,
    ) -> None:
        where = ""
        if file:
            where = file
            if line is not None:
                where += f":{line}"
                if column is not None:
                    where += f":{column}"
            where += ": "
        super().__init__(where + message, hint=hint)
        self.file = file
        self.line = line
        self.column = column
        #: Starlark's caret excerpt (the source line with ``^^^``); for ``--debug`` output.
        self.excerpt = excerpt


class BuildFileNotFoundError(BuildFileError):
    """The build file, or a file it loads, does not exist."""


class BuildFunctionError(BuildFileError):
    """The entry function named by ``--from file:func`` does not exist or cannot be called."""


class BuildArgumentError(BuildError):
    """A build-file function got a wrong argument (name, count, type or value).

    Raised inside built-ins; the evaluator re-raises it as :class:`BuildFileError` with the
    location of the call.
    """


class UnsupportedBuildError(BuildError):
    """The build graph asks for something the compiler cannot build (yet)."""


class BuildOptionError(ValidationError):
    """A build flag (``--output``, ``--tag``, ``--from``, ``--platform``, caches) is malformed.

    Control characters from the offending value are escaped so the message stays one line.
    """

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(one_line(message), hint=hint)

