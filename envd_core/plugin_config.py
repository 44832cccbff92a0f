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
import errno
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

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
        _write(path, (json.dumps(doc, indent=2) + "\n").encode())
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
    lock_path = path.with_name(path.name + ".lock")
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot open lock file `{lock_path}`: {exc.strerror}") from None
    try:
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise StoreError(f"cannot lock `{lock_path}`: {exc.strerror}") from None
                if time.monotonic() > deadline:
                    raise StoreError(f"`{path}` is locked by another envd process") from None
                time.sleep(0.01)
        # temp files seen while holding the lock were left by a killed writer
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _write(path: Path, data: bytes) -> None:
    import tempfile

    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), 0o600)
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise StoreError(f"cannot write `{path}`: {exc.strerror}") from None
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
