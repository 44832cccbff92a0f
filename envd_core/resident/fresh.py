"""Does the code the server has loaded still match the files on disk?

The server forks every command from modules it imported once; an edited module of an editable
install (our development setup, CI) or a package upgraded under it would otherwise keep running
the old code. Before each fork the server calls :meth:`Fingerprint.fresh`; when it answers
False the server declines, the client runs the command itself and starts a new server.

What is compared, from cheap to thorough:

* the interpreter binary (``stat`` of ``sys.executable``);
* each ``sys.path`` directory, by the rule of the plugin index
  (:func:`envd_core.plugin_index._paths_fresh`): installing, removing or upgrading a
  distribution adds or removes a ``*.dist-info`` folder, which moves its directory's mtime;
* every loaded module file that lives *outside* the installation's own directories (stdlib,
  site-packages): those are the editable ones, whose edits no ``dist-info`` records. Each is
  compared by ``(mtime_ns, size, inode, ctime_ns)``: an editor that replaces the file changes
  the inode, and the ctime moves on any write even when an old mtime is put back.

A wheel-installed envd has almost nothing in the last group; our editable tree has the core and
the plugins, ~250 files: a few hundred ``stat`` calls, well under a millisecond.
"""

from __future__ import annotations

import os
import sys
from typing import Any


def _installed_roots() -> tuple[str, ...]:
    """Directories whose files change only when a distribution (or Python) is installed."""
    import site
    import sysconfig

    roots = set(site.getsitepackages())
    user = site.getusersitepackages()
    if isinstance(user, str):
        roots.add(user)
    paths = sysconfig.get_paths()
    roots.update(paths[name] for name in ("stdlib", "platstdlib", "purelib", "platlib"))
    return tuple(sorted(os.path.join(os.path.realpath(r), "") for r in roots))


def _state(path: str) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino, st.st_ctime_ns


class Fingerprint:
    """The state of the loaded code, taken once after the server's imports."""

    def __init__(self, files: dict[str, tuple[int, int, int, int] | None], paths: list[list[Any]],
                 executable: tuple[int, int, int, int] | None) -> None:
        self.files = files
        self.paths = paths
        self.executable = executable

    @classmethod
    def take(cls) -> Fingerprint:
        """The fingerprint of what is loaded now."""
        from envd_core.plugin_index import _paths_key

        installed = _installed_roots()
        files: dict[str, tuple[int, int, int, int] | None] = {}
        for module in list(sys.modules.values()):
            file = getattr(module, "__file__", None)
            if not isinstance(file, str) or not file.endswith(".py"):
                continue
            real = os.path.realpath(file)
            if real.startswith(installed):
                continue
            files[real] = _state(real)
        return cls(files, _paths_key(), _state(sys.executable))

    def changed(self) -> str | None:
        """What changed since :meth:`take` (a path, for the log), or ``None``."""
        from envd_core.plugin_index import _paths_fresh

        if _state(sys.executable) != self.executable:
            return sys.executable
        if not _paths_fresh(self.paths):
            return "a sys.path directory (a distribution was installed or removed)"
        for path, state in self.files.items():
            if _state(path) != state:
                return path
        return None

    def fresh(self) -> bool:
        """Whether the loaded code still matches the files."""
        return self.changed() is None
