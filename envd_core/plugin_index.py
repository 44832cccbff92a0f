"""The plugin index: what each installed plugin provided when it was last loaded, cached.

Loading every plugin means importing every plugin module (and what they import): most of the
time of a read-only ``envd context ls``. The index keeps, per entry-point plugin, the builder,
runner and store type names it registered, the hooks it implements and, per runner type, the
light lister it declares (:attr:`envd_core.runner.Runner.lister`), so the fast path
(:mod:`envd_core.cli.fast`) can answer "is this builder type installed?" and list environments
without importing a plugin.

It is a cache, never a source of truth:

* it is written by the full CLI after it loaded the plugins (:func:`write`), and read only by the
  fast path, which falls back to the full CLI whenever the index is missing, unreadable or stale;
* it is stale when anything it was built from changed: a directory on ``sys.path`` (a
  distribution installed, removed or upgraded changes its directory's mtime: one ``stat`` per
  directory), the plugin switches (``ENVD_PLUGINS``, ``ENVD_DISABLE_PLUGINS``, and the
  ``plugins.json`` that ``envd plugins disable`` writes, by its inode, size and mtime), or, for
  a plugin installed editable (pip's ``direct_url.json`` says so, or its code lives outside the
  folder of its ``dist-info``), the modification time of any ``.py`` file of its package. A
  plugin installed from a wheel changes only with its dist-info, so its files are not walked;
* one file per interpreter and ``sys.path`` (``plugin-index-<hash>.json`` in
  ``$ENVD_CACHE_DIR``, else ``$XDG_CACHE_HOME/envd``, else ``~/.cache/envd``), so two venvs never
  overwrite each other's.

Only the standard library is imported here, and on the read side only ``json`` and ``os``: the
fast path must not load pluggy, attrs, click, pathlib or the entry-point scanner.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from envd_core._entrypoints import EntryPoint
    from envd_core.plugins import Plugins

GROUP = "envd"
INDEX_VERSION = 2

#: Hooks whose results change what the context commands read or show: a plugin implementing one
#: keeps those commands on the full path (team contexts listed, a store that may be selected).
CONTEXT_HOOKS = frozenset({"envd_context_stores", "envd_team_contexts"})
#: Hooks that change how a runner is made: a plugin implementing one keeps ``envs ls`` on the
#: full path (the options in force come from ``envd_option_defaults``).
RUNNER_HOOKS = frozenset({"envd_option_defaults"})


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
    """The switches as the index records them: the two variables, and ``plugins.json`` by
    identity (never parsed here: any write of it makes the index stale, and the full CLI that
    runs then reads it)."""
    from envd_core.contexts.store import config_dir_name

    only = split_env(os.environ.get("ENVD_PLUGINS"))
    blocked = split_env(os.environ.get("ENVD_DISABLE_PLUGINS")) or set()
    try:
        st = os.stat(os.path.join(config_dir_name(), "plugins.json"))
        settings: list[int] | None = [st.st_ino, st.st_size, st.st_mtime_ns]
    except OSError:
        settings = None
    return [None if only is None else sorted(only), sorted(blocked), settings]


def _has_distributions(base: str) -> bool | None:
    try:
        return any(n.endswith((".dist-info", ".egg-info")) for n in os.listdir(base or "."))
    except OSError:
        return None


def _paths_key() -> list[list[Any]]:
    """``[directory, mtime_ns, holds distributions]`` for each ``sys.path`` entry.

    Installing, removing or upgrading a distribution adds or removes a ``*.dist-info`` folder
    in its directory, which changes that directory's mtime: comparing these few ``stat`` calls
    tells that the entry points are the ones indexed without reading every distribution's
    ``entry_points.txt``.
    """
    key: list[list[Any]] = []
    for base in sys.path:
        try:
            mtime: int | None = os.stat(base or ".").st_mtime_ns
        except OSError:
            mtime = None
        key.append([base, mtime, _has_distributions(base) if mtime is not None else None])
    return key


def _paths_fresh(recorded: list[list[Any]]) -> bool:
    """Whether ``sys.path`` is the one :func:`_paths_key` recorded, with the same distributions.

    One ``stat`` per directory. A directory whose mtime moved but that held no distribution and
    still holds none (the script's own, a project directory on ``PYTHONPATH`` that changes all
    the time) is still fresh: only then is it listed.
    """
    if len(recorded) != len(sys.path):
        return False
    for (base, mtime, had), now in zip(recorded, sys.path, strict=True):
        if base != now:
            return False
        try:
            current: int | None = os.stat(base or ".").st_mtime_ns
        except OSError:
            current = None
        if current == mtime:
            continue
        if had is not False or current is None or _has_distributions(base) is not False:
            return False
    return True


def enabled_entry_points() -> tuple[list[EntryPoint], list[EntryPoint]]:
    """The ``envd`` entry points that load and those that do not, under the current switches."""
    from envd_core._entrypoints import entry_points

    only, blocked, disabled = _switches()
    enabled: list[EntryPoint] = []
    skipped: list[EntryPoint] = []
    for ep in entry_points(GROUP):
        (skipped if plugin_state(ep.name, only, blocked, disabled) else enabled).append(ep)
    return enabled, skipped


def index_path() -> str:
    """Where this interpreter's index lives."""
    base = os.environ.get("ENVD_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = os.path.join(xdg or os.path.join(os.path.expanduser("~"), ".cache"), "envd")
    key = _fnv1a(chr(0).join([sys.executable, *sys.path]))
    return os.path.join(os.path.expanduser(base), f"plugin-index-{key:08x}.json")


def _fnv1a(text: str) -> int:
    """32-bit FNV-1a of ``text``: no zlib or hashlib (OpenSSL) import for a file name. The key
    only separates interpreters; a stale or foreign index is detected by its contents anyway."""
    value = 0x811C9DC5
    for byte in text.encode():
        value = ((value ^ byte) * 0x01000193) & 0xFFFFFFFF
    return value


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


def _editable(ep: EntryPoint, root: str | None) -> bool:
    """Whether the plugin's code can change without its ``dist-info`` changing.

    pip records an editable install in ``direct_url.json`` (``dir_info.editable``); code that
    does not live in the directory of its ``dist-info`` (a ``.pth`` path, an import finder) is
    treated the same. A wheel's files change only when the distribution does.
    """
    if ep.folder is None or root is None:
        return True
    try:
        from envd_core.jsonread import loads

        with open(os.path.join(ep.folder, "direct_url.json"), encoding="utf-8") as fh:
            if (loads(fh.read()).get("dir_info") or {}).get("editable"):
                return True
    except (OSError, ValueError, AttributeError):
        pass
    home = os.path.dirname(os.path.abspath(ep.folder))
    return os.path.dirname(os.path.abspath(root)) != home


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
            root = _package_root(module)
            entry: dict[str, Any] = {
                "id": _identity(ep),
                # None: installed from a wheel, its files are not walked (see the docstring)
                "files": _files_signature(root) if _editable(ep, root) else None,
                "error": info.error if info is not None else "not loaded",
            }
            if module is not None:
                entry["hooks"] = sorted(
                    impl.name for impl in plugins.pm.get_hookcallers(module) or ()
                )
                for kind in kinds:
                    entry[kind] = sorted(n for n, o in owners[kind].items() if o == ep.name)
                runners: dict[str, Any] = kinds["runners"]
                entry["listers"] = {name: runners[name].lister for name in entry["runners"]
                                    if isinstance(runners[name].lister, str)}
            entries[ep.name] = entry
        doc = {"version": INDEX_VERSION, "paths": _paths_key(), "switches": _switches_key(),
               "plugins": entries}
        import json

        data = (json.dumps(doc, sort_keys=True) + "\n").encode()
        path = index_path()
        try:
            with open(path, "rb") as fh:
                if fh.read() == data:
                    return  # unchanged: the fast path declined for another reason
        except OSError:
            pass
        os.makedirs(os.path.dirname(path), exist_ok=True)
        from envd_core.atomic import write_atomic

        write_atomic(path, data, mode=0o644)
    except Exception:  # noqa: BLE001 - a cache write must never fail a command
        return


class Index:
    """A fresh index: the builder and runner type names the enabled plugins provide, and the
    light listers of the runner types (``{runner type: "module:function"}``)."""

    __slots__ = ("builders", "hooks", "listers", "runners")

    def __init__(self, builders: set[str], runners: set[str],
                 listers: dict[str, str] | None = None, hooks: set[str] | None = None) -> None:
        self.builders = builders
        self.runners = runners
        self.listers = listers or {}
        #: Every hook some enabled plugin implements.
        self.hooks = hooks or set()

    def installed(self, builder: str, runner: str) -> tuple[bool, bool]:
        """Whether builder type ``builder`` and runner type ``runner`` are provided."""
        return builder in self.builders, runner in self.runners


def read() -> Index | None:
    """The index, if it is fresh and every enabled plugin loaded; else ``None``."""
    from envd_core.jsonread import loads

    try:
        with open(index_path(), encoding="utf-8") as fh:
            doc = loads(fh.read())
        if doc.get("version") != INDEX_VERSION:
            return None
        if doc["switches"] != _switches_key() or not _paths_fresh(doc["paths"]):
            return None  # a distribution came, went or changed, or a plugin was switched
        index = Index(set(), set())
        for entry in doc["plugins"].values():
            if entry.get("error"):
                return None
            files = entry["files"]
            if files is not None and (not files or _files_signature(files[0]) != files):
                return None  # a plugin's code was edited (an editable install)
            index.hooks.update(entry["hooks"])
            index.builders.update(entry["builders"])
            index.runners.update(entry["runners"])
            index.listers.update(entry.get("listers") or {})
        return index
    except Exception:  # noqa: BLE001 - missing, unreadable or malformed: the full path decides
        return None


def read_for_contexts() -> Index | None:
    """The index, if it is fresh and the context commands may trust it; else ``None``.

    ``None`` also when a plugin failed to load (the full CLI prints its warning) or implements a
    hook in :data:`CONTEXT_HOOKS`.
    """
    index = read()
    if index is None or CONTEXT_HOOKS & index.hooks:
        return None
    return index
