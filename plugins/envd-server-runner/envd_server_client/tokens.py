"""The identity tokens ``envd login`` keeps: one file per context, mode 0600, written atomically.

Files live in ``<envd config dir>/envd-server/<context>.json`` and hold the server address, the
login name and the token. They are never printed or logged, and are not part of ``contexts.json``
(so ``envd context export`` never copies a token). Writes go to a temporary file that is made
0600 before the token is written, fsynced and renamed over the old one, as the context store does.
"""

from __future__ import annotations

import os

from envd_core.errors import RunnerError
from envd_core.jsonread import loads
from envd_server_client.address import _Frozen

TYPE_CHECKING = False  # on the fast path of `envd envs ls`: no typing, pathlib or attrs
if TYPE_CHECKING:
    from pathlib import Path

__all__ = ["Credential", "TokenStore"]


class Credential(_Frozen):
    """A login kept for one context. ``repr`` hides the token so no traceback shows it."""

    __slots__ = ("address", "context", "login_name", "token")

    context: str
    address: str
    login_name: str
    token: str

    def __init__(self, context: str, address: str, login_name: str, token: str) -> None:
        put = object.__setattr__
        put(self, "context", context)
        put(self, "address", address)
        put(self, "login_name", login_name)
        put(self, "token", token)

    def __repr__(self) -> str:
        return f"Credential(context={self.context!r}, login_name={self.login_name!r}, token=***)"


class TokenStore:
    """Reads and writes the per-context token files."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        if directory is None:
            from envd_core.contexts.store import config_dir_name

            directory = os.path.join(config_dir_name(), "envd-server")
        from envd_core.contexts.store import clean_path

        self._directory = clean_path(os.fspath(directory))  # as str(Path(directory)) spells it

    @property
    def directory(self) -> Path:
        """Where the token files are."""
        from pathlib import Path

        return Path(self._directory)

    def path(self, context: str) -> Path:
        """The token file of ``context``."""
        from pathlib import Path

        return Path(self._file(context))

    def _file(self, context: str) -> str:
        from envd_server_client.address import quote

        # quote() keeps any context name a single safe file name
        return os.path.join(self._directory, f"{quote(context)}.json")

    def save(self, credential: Credential) -> None:
        """Store ``credential`` for its context (0600, atomic)."""
        import contextlib
        import tempfile

        try:
            os.makedirs(self._directory, mode=0o700, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self._directory, prefix=".token.", suffix=".tmp")
        except OSError as exc:
            raise RunnerError(f"cannot store the token in `{self._directory}`: "
                              f"{exc.strerror}") from None
        import json

        data = json.dumps({"address": credential.address, "login_name": credential.login_name,
                           "token": credential.token}, indent=2).encode()
        try:
            with os.fdopen(fd, "wb") as handle:
                os.fchmod(handle.fileno(), 0o600)  # before the token is in it
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, self._file(credential.context))
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise RunnerError(f"cannot store the token in `{self._directory}`: "
                              f"{exc.strerror}") from None

    def load(self, context: str) -> Credential | None:
        """The credential kept for ``context``, ``None`` if there is none."""
        path = self._file(context)
        try:
            with open(path, "rb") as handle:
                data = loads(handle.read().decode("utf-8"))
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
            os.unlink(self._file(context))
        except FileNotFoundError:
            return False
        return True

    def for_address(self, address: str) -> list[Credential]:
        """Every credential whose server is ``address`` (when the context is not known)."""
        from envd_server_client.address import unquote

        found = []
        try:
            entries = sorted(n for n in os.listdir(self._directory) if n.endswith(".json"))
        except OSError:
            return []
        for name in entries:
            stem = name[:-len(".json")] if name.rfind(".") > 0 else name  # pathlib's `stem`
            credential = self.load(unquote(stem))
            if credential is not None and credential.address == address:
                found.append(credential)
        return found

    def find(self, context: str | None, where: str) -> Credential:
        """The login to use for the server ``where``: ``context``'s when a context is given,
        else the only one kept for that server; one :class:`RunnerError` line otherwise."""
        if context is not None:
            found = self.load(context)
            if found is not None:
                return found
        else:
            matches = self.for_address(where)
            if len(matches) == 1:
                return matches[0]
            if len(matches) > 1:
                names = ", ".join(c.context for c in matches)
                raise RunnerError(
                    f"several contexts hold a login for envd-server `{where}` ({names})",
                    hint="log out of all but one with `envd --context NAME logout`",
                )
        raise RunnerError(f"not logged in to envd-server `{where}`",
                          hint="log in with `envd login`")
