"""Team contexts: a read-only layer of shared context definitions over the user's store.

Two sources, both read on every command that lists or resolves contexts (nothing is cached or
copied, so what the administrator or the vendor changes is what users get next time):

* the system directory ``/etc/envd/contexts.d/`` (``ENVD_TEAM_CONTEXTS_DIR`` overrides it):
  every ``*.json`` file in it, in name order, is one document of the format below, put there by
  configuration management (Ansible, a Debian package, a container image);
* plugins, through the ``envd_team_contexts`` hook (a company's envd distribution).

A file's format (JSON, like ``contexts.json`` and ``envd context export``: the standard library
reads it on every Python envd supports, where ``tomllib`` needs 3.11)::

    {
      "format": "envd-team-contexts/v1",
      "contexts": [
        {"name": "gpu-farm",
         "builder": {"type": "tcp", "address": "buildkit.corp:1234",
                     "options": {"cacert": "/etc/envd/corp-ca.pem"}},
         "runner": {"type": "docker"},
         "description": "the shared GPU builders"}
      ]
    }

Each entry has the shape of a context in ``contexts.json`` (``name`` and ``builder.type``
required). A file that cannot be read or parsed is skipped with one warning naming it: a user
cannot fix ``/etc``, and their own contexts must keep working. A name in two files, or given by
the directory and a plugin, is taken from the first file (the directory beats plugins: the
machine's administrator has the last word).

The layer never changes the user's store: a user context whose name a team context takes later
keeps working and hides the team one (nothing the user stored is ever lost).
"""

from __future__ import annotations

import os

from envd_core.contexts.model import Context, ContextSet
from envd_core.errors import StoreError
from envd_core.jsonread import loads

TYPE_CHECKING = False  # on the fast path of `envd context ls`: no typing, no pathlib
if TYPE_CHECKING:
    from collections.abc import Iterable

FORMAT = "envd-team-contexts/v1"
SYSTEM_DIR = "/etc/envd/contexts.d"
ENV_DIR = "ENVD_TEAM_CONTEXTS_DIR"


class TeamContext:
    """One read-only context and where it was defined (``file /etc/…`` or ``plugin acme``).

    A plain frozen record (no attrs: read on the fast path of ``envd context ls``).
    """

    __slots__ = ("context", "origin")

    context: Context
    origin: str

    def __init__(self, context: Context, origin: str) -> None:
        object.__setattr__(self, "context", context)
        object.__setattr__(self, "origin", origin)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"TeamContext is frozen: cannot set `{name}`")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, TeamContext):
            return NotImplemented
        return (self.context, self.origin) == (other.context, other.origin)

    def __hash__(self) -> int:
        return hash((self.context, self.origin))

    def __repr__(self) -> str:
        return f"TeamContext(context={self.context!r}, origin={self.origin!r})"


def team_dir() -> str:
    """The system directory of team context files (``ENVD_TEAM_CONTEXTS_DIR`` overrides it)."""
    from envd_core.contexts.store import clean_path

    return clean_path(os.environ.get(ENV_DIR) or SYSTEM_DIR)


def read_file(path: str | os.PathLike[str]) -> list[TeamContext]:
    """The contexts of one team file; a malformed file raises StoreError naming it."""
    try:
        with open(path, encoding="utf-8") as handle:
            doc = loads(handle.read())
    except OSError as exc:
        raise StoreError(f"cannot read team context file `{path}`: {exc.strerror}") from None
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
        raise StoreError(f"team context file `{path}` is not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise StoreError(f"team context file `{path}` lacks `\"format\": \"{FORMAT}\"`")
    entries = doc.get("contexts")
    if not isinstance(entries, list):
        raise StoreError(f"team context file `{path}` has no `contexts` list")
    found = []
    for entry in entries:
        context = Context.from_json(entry, where=f"team context file `{path}`")
        found.append(TeamContext(context, f"file {path}"))
    return found


def read_dir(directory: str | os.PathLike[str]) -> tuple[list[TeamContext], list[str]]:
    """Every team context of ``directory`` and one warning per file that was skipped."""
    from envd_core.contexts.store import clean_path

    where = clean_path(os.fspath(directory))
    try:
        files = sorted(
            os.path.join(where, name) for name in os.listdir(where)
            # pathlib's `suffix == ".json"`: a file named just `.json` has no suffix
            if name.rfind(".") > 0 and name.endswith(".json")
            and os.path.isfile(os.path.join(where, name))
        )
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [f"cannot list team context directory `{directory}`: {exc.strerror}"]
    found: list[TeamContext] = []
    warnings: list[str] = []
    for path in files:
        try:
            found.extend(read_file(path))
        except StoreError as exc:
            warnings.append(f"{exc.message}; its contexts are left out")
    return found, warnings


def merge(sources: Iterable[TeamContext]) -> dict[str, TeamContext]:
    """Team contexts by name; the first definition of a name wins."""
    merged: dict[str, TeamContext] = {}
    for item in sources:
        merged.setdefault(item.context.name, item)
    return merged


def layer(user: ContextSet, team: dict[str, TeamContext]) -> ContextSet:
    """The user's contexts, then the team contexts their names do not hide, as one view.

    The view carries ``origins`` for the team contexts; it is for reading and must never be
    handed to a store to write.
    """
    view = ContextSet(contexts=dict(user.contexts), current=user.current)
    for name, item in team.items():
        if name not in view.contexts:
            view.contexts[name] = item.context
            view.origins[name] = item.origin
    return view


def view(user: ContextSet, team: dict[str, TeamContext]) -> tuple[ContextSet, str | None]:
    """The layered view of :func:`layer`, and the current context's name if it is gone.

    A current context that was a team context no longer defined (its plugin disabled, its file
    removed) falls back to ``default`` when there is one; the caller warns about the returned
    name.
    """
    from envd_core.contexts.model import DEFAULT_NAME

    layered = layer(user, team)
    if layered.current is None or layered.current in layered.contexts:
        return layered, None
    gone = layered.current
    layered.current = DEFAULT_NAME if DEFAULT_NAME in layered.contexts else None
    return layered, gone


def use(contexts: ContextSet, team: dict[str, TeamContext], name: str) -> None:
    """Make ``name`` current in the user's ``contexts``; a team context is kept by name only."""
    if name in team and name not in contexts.contexts:
        contexts.current = name  # usable, not copied: the store keeps only the name
    else:
        contexts.use(name)
