"""Which plugins the user switched off: ``plugins.json`` in the envd config directory.

Written by ``envd plugins enable/disable`` the way the context store writes ``contexts.json``:
under an exclusive ``flock`` on ``plugins.json.lock``, to a temporary file that is fsynced and
renamed over the old one, then the directory is fsynced. A killed writer leaves the old or the new
file, never a torn one. A file that cannot be parsed is never replaced: the error names it.

Format::

    {"schema": 1, "disabled": ["acme", "envd-example"]}

Read on every command (plugins are loaded on every command): the read is one small file and
``json``; nothing else is imported.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

from envd_core.atomic import locked, remove_stale_temp_files, write_atomic
from envd_core.contexts.store import config_dir
from envd_core.errors import StoreError

FILE_NAME = "plugins.json"
SCHEMA_VERSION = 1
LOCK_TIMEOUT = 10.0


def config_path() -> Path:
    """``plugins.json`` in the envd config directory."""
    return config_dir() / FILE_NAME


def disabled_plugins() -> set[str]:
    """The names ``envd plugins disable`` stored (empty when the file does not exist)."""
    path = config_path()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise StoreError(f"cannot read `{path}`: {exc.strerror}") from None
    return _decode(raw, path)


def set_disabled(name: str, disabled: bool) -> bool:
    """Store ``name`` as disabled (or not); ``False`` when it already was. One transaction."""
    path = config_path()
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise StoreError(f"cannot create `{directory}`: {exc.strerror}") from None
    with _locked(path):
        try:
            current = _decode(path.read_bytes(), path)
        except FileNotFoundError:
            current = set()
        except OSError as exc:
            raise StoreError(f"cannot read `{path}`: {exc.strerror}") from None
        wanted = current | {name} if disabled else current - {name}
        if wanted == current:
            return False
        doc = {"schema": SCHEMA_VERSION, "disabled": sorted(wanted)}
        write_atomic(path, (json.dumps(doc, indent=2) + "\n").encode())
        return True


def _decode(raw: bytes, path: Path) -> set[str]:
    fix = "fix it or move it away; envd never overwrites a file it cannot read"
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"plugin settings `{path}` are corrupt ({exc})", hint=fix) from None
    disabled = doc.get("disabled") if isinstance(doc, dict) else None
    if not isinstance(disabled, list) or not all(isinstance(n, str) for n in disabled):
        raise StoreError(f"plugin settings `{path}` are corrupt (no `disabled` list)", hint=fix)
    schema = doc.get("schema")
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise StoreError(
            f"plugin settings `{path}` have schema `{schema}`; this envd reads {SCHEMA_VERSION}",
            hint="upgrade envd, or move the file away",
        )
    return set(disabled)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with locked(path.with_name(path.name + ".lock"), guards=path, timeout=LOCK_TIMEOUT):
        remove_stale_temp_files(path)
        yield
