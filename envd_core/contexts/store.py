"""Context stores: the base class and the embedded JSON file store.

The file store keeps every context in one human-readable JSON file, ``contexts.json``, in the
envd config directory (``$ENVD_CONFIG_DIR``, else ``$XDG_CONFIG_HOME/envd``, else
``~/.config/envd``). Upstream envd keeps its own gob-encoded ``contexts`` file in that same
directory; this store never reads or writes it.

Every change is a transaction: take an exclusive ``flock`` on ``contexts.json.lock``, read the
file, change it, write a temporary file, ``fsync`` it, rename it over the old one and ``fsync``
the directory. A process killed at any point leaves either the old or the new file, never a torn
one; concurrent ``envd`` processes serialise on the lock. A file that cannot be parsed is never
replaced: the error names it and the user decides.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod

from envd_core.contexts.model import DEFAULT_NAME, Context, ContextSet, default_context
from envd_core.contexts.validate import validate_name
from envd_core.errors import StoreError, ValidationError
from envd_core.jsonread import loads

# typing, pathlib (with urllib.parse and ipaddress), contextlib and the atomic writer are not
# imported at run time: this module is on the fast path of `envd context ls` (start-up cost).
# Paths are handled as strings inside; the public attributes stay `Path`s, built on access.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import contextlib
    from collections.abc import Callable, Iterator
    from pathlib import Path
    from typing import Any, ClassVar

SCHEMA_VERSION = 1
FILE_NAME = "contexts.json"
LOCK_TIMEOUT = 10.0


def config_dir() -> Path:
    """The envd config directory, honouring ``ENVD_CONFIG_DIR`` and ``XDG_CONFIG_HOME``."""
    from pathlib import Path

    return Path(config_dir_name())


def config_dir_name() -> str:
    """:func:`config_dir` as a string, without importing :mod:`pathlib`."""
    explicit = os.environ.get("ENVD_CONFIG_DIR")
    if explicit:
        return clean_path(os.path.expanduser(explicit))
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = os.path.expanduser(xdg) if xdg else os.path.join(os.path.expanduser("~"), ".config")
    return clean_path(os.path.join(base, "envd"))


def clean_path(text: str) -> str:
    """``text`` as ``str(Path(text))`` spells it (no ``//``, ``/./`` or trailing ``/``).

    Messages and listings name files as the :class:`~pathlib.Path` code did, byte for byte.
    """
    if not text:
        return "."
    # POSIX keeps exactly two leading slashes; pathlib does too
    lead = "//" if text.startswith("//") and not text.startswith("///") else (
        "/" if text.startswith("/") else "")
    parts = [p for p in text.split("/") if p and p != "."]
    return lead + "/".join(parts) if parts or lead else "."


class ContextStore(ABC):
    """Base class of context stores, registered through the ``envd_context_stores`` hook.

    A store holds a :class:`ContextSet`. Subclasses implement :meth:`load` and
    :meth:`transaction`; the core does the validation, so a store only persists.

    Example::

        class VaultStore(ContextStore):
            name = "vault"
            summary = "contexts kept in HashiCorp Vault"

            def load(self): ...
            @contextlib.contextmanager
            def transaction(self): ...
    """

    #: **Required.** The name users select the store by (``ENVD_CONTEXT_STORE=<name>``).
    name: ClassVar[str]
    #: One line for ``envd plugins ls``.
    summary: ClassVar[str] = ""
    #: What a fresh store holds (the ``envd_default_contexts`` hook, set by ``open_store``);
    #: ``None`` means the core's ``default`` alone. Stores call :meth:`initial`.
    seed: Callable[[], ContextSet] | None = None

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self._directory: str | os.PathLike[str] = directory or config_dir_name()

    @property
    def directory(self) -> Path:
        """Where the store keeps its files (the envd config directory unless given)."""
        from pathlib import Path

        return Path(self._directory)

    @directory.setter
    def directory(self, value: str | os.PathLike[str]) -> None:
        self._directory = value

    @property
    def directory_name(self) -> str:
        """:attr:`directory` as a string (no :mod:`pathlib` import)."""
        return clean_path(os.fspath(self._directory))

    @abstractmethod
    def load(self) -> ContextSet:
        """**Required.** Return every stored context; on first use create ``default``."""

    @abstractmethod
    def transaction(self) -> contextlib.AbstractContextManager[ContextSet]:
        """**Required.** Lock, load and yield the set; persist it if the block succeeds."""

    def peek(self) -> ContextSet:
        """Read the stored contexts without creating or changing anything.

        Used where writing would be a surprise (shell completion, the first-run hint). A store
        with nothing stored yet returns what :meth:`load` would create. The default calls
        :meth:`load`; stores whose ``load`` writes should override it.
        """
        return self.load()

    def location(self) -> str:
        """Where the contexts live, for messages."""
        return self.directory_name

    def initial(self) -> ContextSet:
        """What this store holds before its first write (see :attr:`seed`)."""
        return self.seed() if self.seed is not None else _initial()


class FileStore(ContextStore):
    """The embedded default store: one JSON file, atomic writes under a file lock."""

    name = "file"
    summary = "JSON file in the envd config directory (default)"

    @property
    def path(self) -> Path:
        """The store file."""
        from pathlib import Path

        return Path(self._file)

    @property
    def _file(self) -> str:
        if type(self).path is FileStore.path:  # the default place: no pathlib import
            return os.path.join(self.directory_name, FILE_NAME)
        return os.fspath(self.path)  # a subclass that keeps the file elsewhere

    def location(self) -> str:
        return self._file

    def load(self) -> ContextSet:
        found = self._read()
        if found is not None:
            return found
        with self.transaction() as contexts:
            return contexts

    def peek(self) -> ContextSet:
        found = self._read()
        return found if found is not None else self.initial()

    def exists(self) -> bool:
        """Whether the store file has been written yet."""
        return os.path.exists(self._file)

    def transaction(self) -> contextlib.AbstractContextManager[ContextSet]:
        # contextlib is imported by the writers only (`context ls` never opens a transaction)
        import contextlib

        return contextlib.contextmanager(self._transaction)()

    def _transaction(self) -> Iterator[ContextSet]:
        from envd_core.atomic import locked, remove_stale_temp_files

        self._ensure_directory()
        with locked(os.path.join(self.directory_name, FILE_NAME + ".lock"), guards=self._file,
                    timeout=LOCK_TIMEOUT):
            remove_stale_temp_files(self._file)
            contexts = self._read()
            if contexts is None:
                contexts = self.initial()
            before = _encode(contexts)
            yield contexts
            after = _encode(contexts)
            if after != before or not os.path.exists(self._file):
                self._write(after)

    # -- internals -------------------------------------------------------------------------
    def _ensure_directory(self) -> None:
        try:
            os.makedirs(self.directory_name, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create `{self.directory_name}`: {exc.strerror}",
                             hint=_fix_for(exc)) from None

    def _read(self) -> ContextSet | None:
        try:
            with open(self._file, "rb") as handle:
                raw = handle.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read `{self._file}`: {exc.strerror}",
                             hint=_fix_for(exc)) from None
        return _decode(raw, where=self._file)

    def _write(self, data: bytes) -> None:
        from envd_core.atomic import write_atomic

        write_atomic(self._file, data)


def _fix_for(exc: OSError) -> str | None:
    from envd_core.paths import fix_for  # imports pathlib: only an error needs its table

    return fix_for(exc)


def _initial() -> ContextSet:
    """The core's own first contents: ``default``, current (stores used without plugins)."""
    contexts = ContextSet()
    contexts.add(default_context())
    contexts.current = DEFAULT_NAME
    return contexts


def _encode(contexts: ContextSet) -> bytes:
    doc: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "current": contexts.current,
        "contexts": [ctx.to_json() for ctx in contexts.contexts.values()],
    }
    import json  # the writers only: readers parse with envd_core.jsonread

    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def _decode(raw: bytes, *, where: str) -> ContextSet:
    fix = "fix it or move it away; envd never overwrites a file it cannot read"
    try:
        doc = loads(raw.decode("utf-8"))
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
        raise StoreError(f"context store `{where}` is corrupt ({exc})", hint=fix) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("contexts"), list):
        raise StoreError(f"context store `{where}` is corrupt (no `contexts` list)", hint=fix)
    schema = doc.get("schema")
    if not isinstance(schema, int) or schema > SCHEMA_VERSION:
        raise StoreError(
            f"context store `{where}` has schema `{schema}`; this envd reads {SCHEMA_VERSION}",
            hint="upgrade envd, or move the file away",
        )
    contexts = ContextSet()
    for entry in doc["contexts"]:
        try:
            ctx = Context.from_json(entry, where=f"context store `{where}` is corrupt")
        except StoreError as exc:
            raise StoreError(exc.message, hint=fix) from None
        try:  # a hand-edited name (`../x`, an ESC byte) would be listed and echoed as is
            validate_name(ctx.name)
        except ValidationError as exc:
            raise StoreError(f"context store `{where}` is corrupt: {exc.message}",
                             hint=fix) from None
        if ctx.name in contexts.contexts:
            raise StoreError(f"context store `{where}` lists `{ctx.name}` twice", hint=fix)
        contexts.contexts[ctx.name] = ctx
    current = doc.get("current")
    contexts.current = current if isinstance(current, str) else None
    return contexts
