"""Which context is in force, and why.

Highest first:

1. the global ``--context NAME`` flag;
2. the ``ENVD_CONTEXT`` environment variable;
3. a project file named ``.envd-context`` in the working directory or the nearest parent
   directory that has one: its first non-empty line that is not a ``#`` comment is the name;
4. the store's current context (``envd context use``).
"""

from __future__ import annotations

import os

from envd_core.contexts.model import Context, ContextSet
from envd_core.errors import ContextError

TYPE_CHECKING = False  # on the fast path of `envd context show`: no typing, no pathlib
if TYPE_CHECKING:
    from pathlib import Path

PROJECT_FILE = ".envd-context"


class Resolved:
    """The context in force, and the reason (``--context flag``, ``ENVD_CONTEXT``…).

    A plain frozen record (no attrs: ``envd context show`` imports this on its fast path).
    """

    __slots__ = ("context", "detail", "source")

    context: Context
    source: str
    detail: str | None

    def __init__(self, context: Context, source: str, detail: str | None = None) -> None:
        object.__setattr__(self, "context", context)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "detail", detail)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Resolved is frozen: cannot set `{name}`")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Resolved):
            return NotImplemented
        return (self.context, self.source, self.detail) == (
            other.context, other.source, other.detail
        )

    def __hash__(self) -> int:
        return hash((self.context, self.source, self.detail))

    def __repr__(self) -> str:
        return f"Resolved(context={self.context!r}, source={self.source!r}, detail={self.detail!r})"

    @property
    def reason(self) -> str:
        return f"{self.source} ({self.detail})" if self.detail else self.source


def find_project_file(start: Path | None = None) -> Path | None:
    """The nearest ``.envd-context`` from ``start`` (default: cwd) upward, if any."""
    found = _project_file(start)
    if found is None:
        return None
    from pathlib import Path

    return Path(found)


def _project_file(start: str | os.PathLike[str] | None) -> str | None:
    """:func:`find_project_file` on strings (the fast path does not import pathlib)."""
    folder = os.path.realpath(os.getcwd() if start is None else start)
    while True:
        candidate = os.path.join(folder, PROJECT_FILE)
        if os.path.isfile(candidate):
            return candidate
        parent = os.path.dirname(folder)
        if parent == folder:
            return None
        folder = parent


def read_project_file(path: str | os.PathLike[str]) -> str:
    """The context name a project file holds (its first line that is not a comment)."""
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ContextError(f"cannot read project context file `{path}`: {exc}") from None
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            return stripped
    raise ContextError(
        f"project context file `{path}` names no context",
        hint="write a context name on its first line, or delete the file",
    )


def resolve(
    contexts: ContextSet,
    *,
    flag: str | None = None,
    environ: dict[str, str] | os._Environ[str] | None = None,
    cwd: Path | None = None,
) -> Resolved:
    """Pick the context in force; a name that does not exist says where it came from."""
    env = os.environ if environ is None else environ
    candidates: list[tuple[str | None, str, str | None]] = [
        (flag, "--context flag", None),
        (env.get("ENVD_CONTEXT") or None, "ENVD_CONTEXT", None),
    ]
    for name, source, detail in candidates:
        if name:
            return Resolved(_pick(contexts, name, source), source, detail)
    project = _project_file(cwd)
    if project is not None:
        name = read_project_file(project)
        return Resolved(_pick(contexts, name, str(project)), "project file", str(project))
    if contexts.current and contexts.current in contexts.contexts:
        return Resolved(contexts.contexts[contexts.current], "current context")
    raise ContextError(
        "no current context",
        hint="choose one with `envd context use --name <name>` or pass --context",
    )


def _pick(contexts: ContextSet, name: str, source: str) -> Context:
    if name not in contexts.contexts:
        known = ", ".join(contexts.contexts) or "none"
        raise ContextError(
            f'context "{name}" (from {source}) does not exist', hint=f"known contexts: {known}"
        )
    return contexts.contexts[name]
