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

import contextlib
import json
import os
from abc import ABC, abstractmethod
from pathlib import Path

from envd_core.atomic import locked, remove_stale_temp_files, write_atomic
from envd_core.contexts.model import DEFAULT_NAME, Context, ContextSet, default_context
from envd_core.contexts.validate import validate_name
from envd_core.errors import StoreError, ValidationError
from envd_core.paths import fix_for

TYPE_CHECKING = False  # typing is not imported at run time (`envd context ls` start-up)
if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from typing import Any, ClassVar

SCHEMA_VERSION = 1
FILE_NAME = "contexts.json"
LOCK_TIMEOUT = 10.0


def config_dir() -> Path:
    """The envd config directory, honouring ``ENVD_CONFIG_DIR`` and ``XDG_CONFIG_HOME``."""
    explicit = os.environ.get("ENVD_CONFIG_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CONFIG_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".config"
    return base / "envd"


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

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or config_dir()

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
        return str(self.directory)

    def initial(self) -> ContextSet:
        """What this store holds before its first write (see :attr:`seed`)."""
        return self.seed() if self.seed is not None else _initial()


class FileStore(ContextStore):
    """The embedded default store: one JSON file, atomic writes under a file lock."""

    name = "file"
    summary = "JSON file in the envd config directory (default)"

    @property
    def path(self) -> Path:
        return self.directory / FILE_NAME

    def location(self) -> str:
        return str(self.path)

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
        return self.path.exists()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[ContextSet]:
        self._ensure_directory()
        with self._locked():
            remove_stale_temp_files(self.path)
            contexts = self._read()
            if contexts is None:
                contexts = self.initial()
            before = _encode(contexts)
            yield contexts
            after = _encode(contexts)
            if after != before or not self.path.exists():
                self._write(after)

    # -- internals -------------------------------------------------------------------------
    def _ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create `{self.directory}`: {exc.strerror}",
                             hint=fix_for(exc)) from None

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with locked(self.directory / (FILE_NAME + ".lock"), guards=self.path,
                    timeout=LOCK_TIMEOUT):
            yield

    def _read(self) -> ContextSet | None:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read `{self.path}`: {exc.strerror}",
                             hint=fix_for(exc)) from None
        return _decode(raw, where=str(self.path))

    def _write(self, data: bytes) -> None:
        write_atomic(self.path, data)


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
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()


def _decode(raw: bytes, *, where: str) -> ContextSet:
    fix = "fix it or move it away; envd never overwrites a file it cannot read"
    try:
        doc = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
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
