"""The parts of the definition cache's key that describe envd's own code and installation.

:func:`source_signature` signs the source of the editable packages (every ``.py`` file's path,
size, mtime and ctime), :func:`editable_roots` finds those packages among the loaded modules,
and :func:`_installed_key` names the installed distributions by their ``sys.path``
directories. Split out of :mod:`envd_core.pipeline.defcache`, which re-exports them.

In the resident server (docs/resident.md) all three are worked out once, before forking
(:func:`prime`), and a served build's child only checks that nothing moved since (for the
roots: that nothing was imported, :func:`editable_roots`): walking the
~10 package trees (~200 files, ~80 directories) and listing the ``sys.path`` directories took
~10 ms of CPU of each served build under 8 concurrent builds (a forked child pays a
copy-on-write fault for every page its walk touches), checking ~1-2 ms. A check that finds any
file or directory changed falls back to the full work, so the key is always the one a
process of its own would compute.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterable
from typing import Any

#: ``(mtime_ns, size, inode, ctime_ns)`` of a path, or ``None`` when it is gone.
State = tuple[int, int, int, int] | None


def _state(path: str) -> State:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns


def _sign(root: str) -> tuple[list[Any], tuple[str, ...], tuple[State, ...]]:
    """``[root, digest, .py file count]``, with every path the walk read and its state (the
    directories too: a file added, removed or renamed moves its directory's mtime)."""
    if os.path.isfile(root):
        state = _state(root)
        if state is None:
            raise FileNotFoundError(root)
        return [root, f"{state[1]}:{state[0]}:{state[3]}", 1], (root,), (state,)
    digest = hashlib.sha256()
    count = 0
    paths: list[str] = []
    states: list[State] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        paths.append(folder)
        states.append(_state(folder))
        for name in sorted(files):
            if name.endswith(".py"):
                count += 1
                path = os.path.join(folder, name)
                st = os.stat(path)
                digest.update(
                    f"{path}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0".encode())
                paths.append(path)
                states.append((st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns))
    if not paths:  # no such directory: signed again once it appears
        paths, states = [root], [None]
    return [root, digest.hexdigest(), count], tuple(paths), tuple(states)


#: Root -> its signature and the states it was computed from, filled by :func:`prime` in the
#: resident server before it forks; never filled in a process of its own.
_SIGNED: dict[str, tuple[list[Any], tuple[str, ...], tuple[State, ...]]] = {}


def source_signature(roots: Iterable[str]) -> list[Any]:
    """``[root, digest, .py file count]`` per package directory (or module file); the digest
    covers every ``.py`` file's path, size, mtime and ctime, so an edit shows even when it puts
    the old mtime back (``rsync -t``, an archive, ``touch -d``): the ctime cannot be set.

    A root :func:`prime` signed is taken from there when every file and directory it read
    has the same state now (one ``stat`` each, no listing)."""
    out: list[Any] = []
    for root in sorted(set(roots)):
        signed = _SIGNED.get(root)
        if signed is not None and all(
                _state(path) == state for path, state in zip(signed[1], signed[2], strict=True)):
            out.append(list(signed[0]))
            continue
        out.append(_sign(root)[0])
    return out


#: The standard library's folder (``lib-dynload`` is inside). Not ``sysconfig.get_paths()``:
#: it measured ~60 ms, on every build's key.
_STDLIB = os.path.join(os.path.dirname(os.__file__), "")


def is_installed_code(file: str) -> bool:
    """Whether a module file is the standard library's or an installed (not editable)
    distribution's: the key covers those by the interpreter's version and the ``sys.path``
    directories' distributions (:func:`_installed_key`), everything else by its source."""
    return file.startswith(_STDLIB) or "/site-packages/" in file or "/dist-packages/" in file


#: Top-level module name -> its editable root (``None``: stdlib, installed, no file). Filled
#: by :func:`editable_roots`; the resident server fills it before forking (its preload calls
#: it), so a child looks up its ~1,000 modules instead of touching each module object: in a
#: forked child every touch writes a reference count, and the copy-on-write faults of reading
#: them all took ~10 ms of each build's key.
_ROOTS: dict[str, tuple[str, ...]] = {}


def _roots_of(module: object) -> tuple[str, ...]:
    file = getattr(module, "__file__", None)
    if isinstance(file, str):
        if os.path.isabs(file) and not is_installed_code(file):
            return (os.path.dirname(file) if os.path.basename(file) == "__init__.py" else file,)
        return ()
    return tuple(portion for portion in getattr(module, "__path__", None) or ()
                 if isinstance(portion, str) and os.path.isabs(portion)
                 and not is_installed_code(os.path.join(portion, "")))


class _ImportWatch:
    """A meta path finder that finds nothing: it notes that an import reached the finders,
    i.e. that a module not in ``sys.modules`` was asked for since :func:`prime`."""

    seen = False

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        self.seen = True


_WATCH = _ImportWatch()
#: ``(len(sys.modules), roots)`` as :func:`prime` found them.
_PRIMED_ROOTS: list[tuple[int, frozenset[str]]] = []


def editable_roots() -> set[str]:
    """The package directories (or module files) of the top-level modules in ``sys.modules``
    that are neither the standard library's nor an installed distribution's: editable installs,
    ``sys.path`` additions.

    After :func:`prime` (the resident server), while nothing was imported since (the
    :class:`_ImportWatch` first on ``sys.meta_path`` saw no request) and ``sys.modules`` has as
    many entries, the primed answer is returned without reading ``sys.modules``: in a forked
    child, iterating its ~1,000 names writes each name's reference count, ~600 copy-on-write
    faults and ~2.3 ms per build. (A module put into ``sys.modules`` by hand while another is
    removed would go unseen; nothing in envd does that.)
    """
    if (_PRIMED_ROOTS and not _WATCH.seen and sys.meta_path and sys.meta_path[0] is _WATCH
            and len(sys.modules) == _PRIMED_ROOTS[0][0]):
        return set(_PRIMED_ROOTS[0][1])
    return _scan_roots()


def _scan_roots() -> set[str]:
    """:func:`editable_roots` worked out from every name in ``sys.modules``.

    Only top-level names are read: a submodule's code is under its top-level package's
    directory, which the key signs whole. A namespace package has no file of its own: each of
    its editable portions is a root. ``__main__`` (the console script's stub, or nothing in a
    resident child) is left out: it holds no code a build runs. A module's roots are worked out
    once per process (:data:`_ROOTS`): its file does not move while it is loaded.
    """
    roots: set[str] = set()
    modules = sys.modules
    for name in list(modules):
        if "." in name or name in ("__main__", "__mp_main__"):
            continue
        found = _ROOTS.get(name)
        if found is None:
            module = modules.get(name)
            if module is None:
                continue
            found = _ROOTS[name] = _roots_of(module)
        roots.update(found)
    return roots


def package_root(module_name: str) -> str | None:
    """The directory of the top-level package ``module_name`` belongs to (or its file)."""
    module = sys.modules.get(module_name.split(".", 1)[0])
    file = getattr(module, "__file__", None)
    if not isinstance(file, str):
        return None
    return os.path.dirname(file) if os.path.basename(file) == "__init__.py" else file


def _installed_key() -> list[Any]:
    """The ``sys.path`` directories that hold distributions, with their mtimes: installing,
    removing or upgrading one (starlark-pyo3, protobuf, a plugin) changes it. The plugin index's
    rule, so a directory without distributions (the working directory under ``python -m``,
    whose mtime moves with every file made in it) does not invalidate every entry."""
    from envd_core.plugin_index import _paths_key

    return _paths_key()


#: ``_installed_key()`` as :func:`prime` found it: per ``sys.path`` directory, its mtime and
#: whether it holds distributions.
_INSTALLED: list[list[Any]] = []


def installed_key() -> list[Any]:
    """:func:`_installed_key`, from :func:`prime`'s result when ``sys.path`` and every
    directory's mtime are the same (the listing is what costs; an unchanged mtime means an
    unchanged listing, the plugin index's rule)."""
    if _INSTALLED and [entry[0] for entry in _INSTALLED] == sys.path:
        fresh = True
        for base, mtime, _has in _INSTALLED:
            try:
                now: int | None = os.stat(base or ".").st_mtime_ns
            except OSError:
                now = None
            if now != mtime:
                fresh = False
                break
        if fresh:
            return [list(entry) for entry in _INSTALLED]
    return _installed_key()


def prime() -> None:
    """Work out the editable roots, their signatures and the installation key once, in the
    resident server before it forks: its children then only check them (module docstring)."""
    _PRIMED_ROOTS.clear()
    if _WATCH not in sys.meta_path:
        sys.meta_path.insert(0, _WATCH)
    roots = editable_roots()
    _WATCH.seen = False
    _PRIMED_ROOTS.append((len(sys.modules), frozenset(roots)))
    _SIGNED.clear()
    for root in roots:
        try:
            _SIGNED[root] = _sign(root)
        except OSError:  # gone or unreadable: each build signs it (and fails) as before
            continue
    _INSTALLED[:] = _installed_key()
