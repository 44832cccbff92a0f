"""The identity tokens ``envd login`` keeps: one file per context, mode 0600, written atomically.

Files live in ``<envd config dir>/envd-server/<context>.json`` and hold the server address, the
login name and the token. They are never printed or logged, and are not part of ``contexts.json``
(so ``envd context export`` never copies a token). Writes go to a temporary file that is made
0600 before the token is written, fsynced and renamed over the old one, as the context store does.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from urllib.parse import quote, unquote

import attrs

from envd_core.contexts.store import config_dir
from envd_core.errors import RunnerError

__all__ = ["Credential", "TokenStore"]


@attrs.frozen(repr=False)
class Credential:
    """A login kept for one context. ``repr`` hides the token so no traceback shows it."""

    context: str
    address: str
    login_name: str
    token: str

    def __repr__(self) -> str:
        return f"Credential(context={self.context!r}, login_name={self.login_name!r}, token=***)"


class TokenStore:
    """Reads and writes the per-context token files."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or (config_dir() / "envd-server")

    def path(self, context: str) -> Path:
        # quote() keeps any context name a single safe file name
        return self.directory / f"{quote(context, safe='')}.json"

    def save(self, credential: Credential) -> None:
        """Store ``credential`` for its context (0600, atomic)."""
        import tempfile

        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, prefix=".token.", suffix=".tmp")
        except OSError as exc:
            raise RunnerError(f"cannot store the token in `{self.directory}`: "
                              f"{exc.strerror}") from None
        data = json.dumps({"address": credential.address, "login_name": credential.login_name,
                           "token": credential.token}, indent=2).encode()
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)  # before the token is in it
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self.path(credential.context))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise RunnerError(f"cannot store the token in `{self.directory}`: "
                              f"{exc.strerror}") from None

    def load(self, context: str) -> Credential | None:
        """The credential kept for ``context``, ``None`` if there is none."""
        path = self.path(context)
        try:
            data = json.loads(path.read_bytes())
            return Credential(context=context, address=str(data["address"]),
                              login_name=str(data["login_name"]), token=str(data["token"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            raise RunnerError(
                f"the token file `{path}` is unreadable or damaged",
                hint="log in again with `envd login` (it replaces the file)",
            ) from None

    def remove(self, context: str) -> bool:
        """Forget the credential of ``context``; ``False`` if there was none."""
        try:
            self.path(context).unlink()
        except FileNotFoundError:
            return False
        return True

    def for_address(self, address: str) -> list[Credential]:
        """Every credential whose server is ``address`` (when the context is not known)."""
        found = []
        try:
            entries = sorted(self.directory.glob("*.json"))
        except OSError:
            return []
        for path in entries:
            credential = self.load(unquote(path.stem))
            if credential is not None and credential.address == address:
                found.append(credential)
        return found
