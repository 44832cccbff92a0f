"""The plugin index: what each installed plugin provided when it was last loaded, cached.

Loading every plugin means importing every plugin module (and what they import): most of the
time of a read-only ``envd context ls``. The index keeps, per entry-point plugin, the builder,
runner and store type names it registered and the hooks it implements, so the fast path of the
read-only context commands (:mod:`envd_core.cli.fast`) can answer "is this builder type
installed?" without importing a plugin.

It is a cache, never a source of truth:

* it is written by the full CLI after it loaded the plugins (:func:`write`), and read only by the
  fast path, which falls back to the full CLI whenever the index is missing, unreadable or stale;
* it is stale when anything it was built from changed: a directory on ``sys.path`` (a
  distribution installed, removed or upgraded changes its directory's mtime), the plugin
  switches (``ENVD_PLUGINS``, ``ENVD_DISABLE_PLUGINS``, ``envd plugins disable``), or the
  modification time of any ``.py`` file of a plugin's package (an editable install being
  edited);
* one file per interpreter and ``sys.path`` (``plugin-index-<hash>.json`` in
  ``$ENVD_CACHE_DIR``, else ``$XDG_CACHE_HOME/envd``, else ``~/.cache/envd``), so two venvs never
  overwrite each other's.

Only the standard library is imported here: the fast path must not load pluggy, attrs or click.
"""

from __future__ import annotations

import json
import os
import sys

from envd_core._entrypoints import EntryPoint, entry_points

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from envd_core.plugins import Plugins

GROUP = "envd"
INDEX_VERSION = 1

#: Hooks whose results change what the context commands read or show: a plugin implementing one
#: keeps those commands on the full path (team contexts listed, a store that may be selected).
CONTEXT_HOOKS = frozenset({"envd_context_stores", "envd_team_contexts"})


def plugin_state(
    name: str, only: set[str] | None, blocked: set[str], disabled: set[str]
) -> str | None:
    """Why entry-point plugin ``name`` is not loaded, or ``None`` when it is.

    The one rule for ``ENVD_DISABLE_PLUGINS``, ``ENVD_PLUGINS`` and ``envd plugins disable``,
    used by the plugin manager and by the index alike.
    """
    if name in blocked:
        return "disabled by ENVD_DISABLE_PLUGINS"
    if only is not None and name not in only:
        return "not in ENVD_PLUGINS"
    if name in disabled:
        return "disabled"
    return None


def split_env(value: str | None) -> set[str] | None:
    """A comma-separated switch (``ENVD_PLUGINS=a,b``) as a set; ``None`` when unset."""
    if value is None:
        return None
    return {part.strip() for part in value.split(",") if part.strip()}


def _switches() -> tuple[set[str] | None, set[str], set[str]]:
    """The plugin switches: ``ENVD_PLUGINS``, ``ENVD_DISABLE_PLUGINS``, ``plugins.json``."""
    from envd_core.plugin_config import disabled_plugins

    only = split_env(os.environ.get("ENVD_PLUGINS"))
    blocked = split_env(os.environ.get("ENVD_DISABLE_PLUGINS")) or set()
    return only, blocked, disabled_plugins()


def _switches_key() -> list[Any]:
    only, blocked, disabled = _switches()
    return [None if only is None else sorted(only), sorted(blocked), sorted(disabled)]


def _paths_key() -> list[list[Any]]:
    """Each ``sys.path`` directory that holds distributions, with its modification time.

    Installing, removing or upgrading a distribution adds or removes a ``*.dist-info`` folder
    in its directory, which changes that directory's mtime: comparing these few ``stat`` calls
    tells that the entry points are the ones indexed without reading every distribution's
    ``entry_points.txt`` (the bulk of the check's cost otherwise). A directory without any
    distribution (the script's own, a project directory that changes all the time) is recorded
    as such and checked to still hold none.
    """
    key: list[list[Any]] = []
    for base in sys.path:
        try:
            names = os.listdir(base or ".")
        except OSError:
            key.append([base, None])
            continue
        if any(n.endswith((".dist-info", ".egg-info")) for n in names):
            try:
                key.append([base, os.stat(base or ".").st_mtime_ns])
            except OSError:
                key.append([base, None])
        else:
            key.append([base, "no distributions"])
    return key


def enabled_entry_points() -> tuple[list[EntryPoint], list[EntryPoint]]:
    """The ``envd`` entry points that load and those that do not, under the current switches."""
    only, blocked, disabled = _switches()
    enabled: list[EntryPoint] = []
    skipped: list[EntryPoint] = []
    for ep in entry_points(GROUP):
        (skipped if plugin_state(ep.name, only, blocked, disabled) else enabled).append(ep)
    return enabled, skipped


def index_path() -> str:
    """Where this interpreter's index lives."""
    import zlib

    base = os.environ.get("ENVD_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = os.path.join(xdg or os.path.join(os.path.expanduser("~"), ".cache"), "envd")
    # zlib, not hashlib (which loads OpenSSL): the key only separates interpreters, and a stale
    # or foreign index is detected by its contents anyway
    key = f"{zlib.crc32(chr(0).join([sys.executable, *sys.path]).encode()):08x}"
    return os.path.join(os.path.expanduser(base), f"plugin-index-{key}.json")


def _files_signature(root: str | None) -> list[Any]:
    """``[path, newest mtime_ns, file count]`` of the ``.py`` files under a plugin's package."""
    if not root:
        return []
    newest, count = 0, 0
    if os.path.isfile(root):
        return [root, os.stat(root).st_mtime_ns, 1]
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        for name in files:
            if name.endswith(".py"):
                count += 1
                newest = max(newest, os.stat(os.path.join(folder, name)).st_mtime_ns)
    return [root, newest, count]


def _package_root(module: object) -> str | None:
    """The package directory (or the single module file) a plugin was imported from."""
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        return None
    if os.path.basename(file) == "__init__.py":
        return os.path.dirname(file)
    return file


def _identity(ep: EntryPoint) -> list[Any]:
    return [ep.value, ep.distribution, ep.version, ep.folder]


def write(plugins: Plugins) -> None:
    """Record what the loaded ``plugins`` provide (called by the full CLI; best effort).

    Never raises: a cache that cannot be written only means the next read-only command takes
    the full path again.
    """
    try:
        enabled, _skipped = enabled_entry_points()
        kinds = {kind: plugins._collect(kind) for kind in ("builders", "runners", "stores")}
        owners = {
            kind: {name: plugins.provider_of(kind, name) for name in types}
            for kind, types in kinds.items()
        }
        entries: dict[str, Any] = {}
        for ep in enabled:
            info = plugins.known(ep.name)
            module = plugins.pm.get_plugin(ep.name) if plugins.loaded(ep.name) else None
            entry: dict[str, Any] = {
                "id": _identity(ep),
                "files": _files_signature(_package_root(module)),
                "error": info.error if info is not None else "not loaded",
            }
            if module is not None:
                entry["hooks"] = sorted(
                    impl.name for impl in plugins.pm.get_hookcallers(module) or ()
                )
                for kind in kinds:
                    entry[kind] = sorted(n for n, o in owners[kind].items() if o == ep.name)
            entries[ep.name] = entry
        doc = {"version": INDEX_VERSION, "paths": _paths_key(), "switches": _switches_key(),
               "plugins": entries}
        data = (json.dumps(doc, sort_keys=True) + "\n").encode()
        path = index_path()
        try:
            with open(path, "rb") as fh:
                if fh.read() == data:
                    return  # unchanged: the fast path declined for another reason
        except OSError:
            pass
        os.makedirs(os.path.dirname(path), exist_ok=True)
        from pathlib import Path

        from envd_core.atomic import write_atomic

        write_atomic(Path(path), data, mode=0o644)
    except Exception:  # noqa: BLE001 - a cache write must never fail a command
        return


class Index:
    """A fresh index: the builder and runner type names the enabled plugins provide."""

    __slots__ = ("builders", "runners")

    def __init__(self, builders: set[str], runners: set[str]) -> None:
        self.builders = builders
        self.runners = runners

    def installed(self, builder: str, runner: str) -> tuple[bool, bool]:
        """Whether builder type ``builder`` and runner type ``runner`` are provided."""
        return builder in self.builders, runner in self.runners


def read_for_contexts() -> Index | None:
    """The index, if it is fresh and the context commands may trust it; else ``None``.

    ``None`` also when a plugin failed to load (the full CLI prints its warning) or implements a
    hook in :data:`CONTEXT_HOOKS`.
    """
    try:
        with open(index_path(), encoding="utf-8") as fh:
            doc = json.load(fh)
        if doc.get("version") != INDEX_VERSION:
            return None
        if doc["paths"] != _paths_key() or doc["switches"] != _switches_key():
            return None  # a distribution came, went or changed, or a plugin was switched
        builders: set[str] = set()
        runners: set[str] = set()
        for entry in doc["plugins"].values():
            if entry.get("error"):
                return None
            files = entry["files"]
            if not files or _files_signature(files[0]) != files:
                return None  # a plugin's code was edited (an editable install)
            if CONTEXT_HOOKS.intersection(entry["hooks"]):
                return None
            builders.update(entry["builders"])
            runners.update(entry["runners"])
        return Index(builders, runners)
    except Exception:  # noqa: BLE001 - missing, unreadable or malformed: the full path decides
        return None
