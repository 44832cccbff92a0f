"""Entry points of one group, read straight from ``*.dist-info`` directories on ``sys.path``.

:func:`importlib.metadata.entry_points` parses every distribution's metadata with the email
package and costs 30-80 ms at start-up; envd needs one group of a handful of plugins on every
command. This scanner reads only ``entry_points.txt`` files (and, for the matches, the header of
``METADATA``), with the same rules: the first distribution of a name on ``sys.path`` wins.
"""

from __future__ import annotations

import importlib
import os
import re
import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator

_NORMALIZE = re.compile(r"[-_.]+")


class EntryPoint:
    """One entry point and the distribution that declares it.

    A plain record rather than a ``typing.NamedTuple``: typing is not imported on the start-up
    path. ``folder`` is the ``*.dist-info`` directory it was read from (``None`` when built by
    hand), which the plugin index (:mod:`envd_core.plugin_index`) fingerprints.
    """

    __slots__ = ("distribution", "folder", "name", "value", "version")

    def __init__(
        self,
        name: str,
        value: str,
        distribution: str | None,
        version: str | None,
        folder: str | None = None,
    ) -> None:
        self.name = name
        self.value = value
        self.distribution = distribution
        self.version = version
        self.folder = folder

    def __iter__(self) -> Iterator[str | None]:
        # unpacks as the NamedTuple it replaced did: name, value, distribution, version
        return iter((self.name, self.value, self.distribution, self.version))

    def __repr__(self) -> str:
        return (f"EntryPoint(name={self.name!r}, value={self.value!r}, "
                f"distribution={self.distribution!r}, version={self.version!r})")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EntryPoint):
            return NotImplemented
        return (self.name, self.value, self.distribution, self.version, self.folder) == (
            other.name, other.value, other.distribution, other.version, other.folder)

    __hash__ = None  # type: ignore[assignment]

    def load(self) -> object:
        """Import the entry point's module and return it, or the attribute it names."""
        module, _, attr = self.value.partition(":")
        obj: object = importlib.import_module(module.strip())
        for part in filter(None, attr.strip().split(".")):
            obj = getattr(obj, part)
        return obj


def _parse(text: str, group: str) -> list[tuple[str, str]]:
    found, current = [], None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
        elif current == group and "=" in line:
            name, _, value = line.partition("=")
            found.append((name.strip(), value.strip()))
    return found


def _header(folder: str) -> tuple[str | None, str | None]:
    fields: dict[str, str] = {}
    for filename in ("METADATA", "PKG-INFO"):
        try:
            with open(os.path.join(folder, filename), encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if not line.strip():
                        break
                    key, sep, value = line.partition(":")
                    if sep and key in ("Name", "Version"):
                        fields.setdefault(key, value.strip())
            break
        except OSError:
            continue
    return fields.get("Name"), fields.get("Version")


def _dist_key(folder_name: str) -> str:
    stem = folder_name.rsplit(".", 1)[0]
    return _NORMALIZE.sub("_", stem.split("-", 1)[0]).lower()


def entry_points(group: str) -> list[EntryPoint]:
    """Every entry point of ``group``, sorted by name; a name declared twice keeps the first."""
    seen_dists: set[str] = set()
    found: dict[str, EntryPoint] = {}
    for base in sys.path:
        try:
            names = sorted(os.listdir(base or "."))
        except OSError:  # missing directories, zip files
            continue
        for folder_name in names:
            if not folder_name.endswith((".dist-info", ".egg-info")):
                continue
            key = _dist_key(folder_name)
            if key in seen_dists:
                continue
            seen_dists.add(key)
            folder = os.path.join(base or ".", folder_name)
            try:
                with open(os.path.join(folder, "entry_points.txt"), encoding="utf-8") as fh:
                    matches = _parse(fh.read(), group)
            except OSError:
                continue
            if not matches:
                continue
            dist, version = _header(folder)
            for name, value in matches:
                found.setdefault(name, EntryPoint(name, value, dist, version, folder))
    return [found[name] for name in sorted(found)]
