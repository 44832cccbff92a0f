"""Each environment's SSH host key, and the known_hosts file envd keeps for them.

Upstream envd's SSH entry turns host key checking off (``StrictHostKeyChecking no``,
``UserKnownHostsFile /dev/null``) because its ``envd-sshd`` makes a new key at every start. Here,
for a runner that :attr:`~envd_core.runner.Runner.accepts_host_key`, each environment gets an
ed25519 host key generated on this machine when it is created (``<config>/hostkeys/<name>``,
mode 0600; never baked into an image layer, since images get pushed), the runner hands it to the
environment's SSH server, and its public half is recorded in ``<config>/known_hosts`` under the
entry's ``HostKeyAlias`` (``<name>.envd``), so the entry can say ``StrictHostKeyChecking yes``.
The alias, not ``[127.0.0.1]:port``, keys the line: the published port changes with each start.

Writes follow :mod:`envd_core.atomic` (lock, temp file, fsync, rename); lines of known_hosts that
are not envd's own aliases are kept byte for byte.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import attrs

from envd_core.atomic import locked, write_atomic
from envd_core.errors import EnvdError

__all__ = ["HostKey", "HostKeyError", "HostKeys"]

KNOWN_HOSTS = "known_hosts"
KEY_DIR = "hostkeys"


class HostKeyError(EnvdError):
    """An environment's host key or envd's known_hosts file cannot be made or written."""


@attrs.frozen
class HostKey:
    """One environment's host key: the private key file and its public line."""

    path: Path
    #: ``ssh-ed25519 AAAA…`` (type and key, no comment).
    public: str


def _alias_of(line: bytes) -> bytes | None:
    words = line.split(None, 1)
    return words[0] if words and not line.lstrip().startswith(b"#") else None


class HostKeys:
    """Host keys and the known_hosts file under one envd config directory."""

    def __init__(self, config_dir: Path) -> None:
        self.config_dir = config_dir
        self.known_hosts = config_dir / KNOWN_HOSTS
        #: Keys :meth:`prepare` is making on a thread, by environment name.
        self._pending: dict[str, Any] = {}

    def key_path(self, name: str) -> Path:
        """Where environment ``name``'s private host key is kept."""
        return self.config_dir / KEY_DIR / name

    def get(self, name: str) -> HostKey | None:
        """The key of ``name`` if both halves exist."""
        path = self.key_path(name)
        try:
            public = path.with_suffix(".pub").read_text(encoding="ascii").split()
        except (OSError, UnicodeDecodeError):
            return None
        if len(public) < 2 or not path.is_file():
            return None
        return HostKey(path=path, public=f"{public[0]} {public[1]}")

    def prepare(self, name: str) -> None:
        """Start making ``name``'s key on a thread when it has none, so ``ssh-keygen`` runs while
        ``up`` builds (or ``run`` opens the runner's client); :meth:`ensure` takes it over and
        :meth:`discard_prepared` removes it when the environment turns out to need none. An
        existing key is never touched here: ``--force`` replaces it in :meth:`ensure`, only
        once the environment is being replaced."""
        if name in self._pending or self.get(name) is not None:
            return
        from envd_core.environments.waiting import Background

        self._pending[name] = Background(self._make, name)

    def discard_prepared(self, name: str) -> None:
        """Remove the key :meth:`prepare` made for ``name`` (a non-dev image needs none)."""
        pending = self._pending.pop(name, None)
        if pending is None:
            return
        with contextlib.suppress(HostKeyError):
            pending.result()
            self.remove(name)

    def ensure(self, name: str, *, replace: bool = False) -> HostKey:
        """The host key of ``name``: kept across re-creations, made anew when missing or when
        ``replace`` (``up --force``)."""
        pending = self._pending.pop(name, None)
        if pending is not None:
            made: HostKey = pending.result()  # its failure is this call's
            if not replace:
                return made
        if not replace:
            found = self.get(name)
            if found is not None:
                return found
        return self._make(name)

    def _make(self, name: str) -> HostKey:
        """Generate ``name``'s key (replacing any) with ``ssh-keygen``."""
        keygen = shutil.which("ssh-keygen")
        if keygen is None:
            raise HostKeyError(
                "cannot generate the environment's SSH host key: `ssh-keygen` is not installed",
                hint="install the OpenSSH client (apt-get install openssh-client)",
            )
        directory = self.key_path(name).parent
        try:
            directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise HostKeyError(f"cannot create `{directory}`: {exc.strerror}") from None
        path = self.key_path(name)
        tmp = directory / f".{name}.{os.getpid()}.tmp"
        for stale in (tmp, tmp.with_name(tmp.name + ".pub")):
            stale.unlink(missing_ok=True)
        proc = subprocess.run(
            [keygen, "-q", "-t", "ed25519", "-N", "", "-C", f"{name}.envd", "-f", str(tmp)],
            capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise HostKeyError(f"ssh-keygen failed: {proc.stderr.strip() or proc.returncode}")
        os.chmod(tmp, 0o600)
        # the private half last: get() only believes a key whose .pub is there too
        os.replace(tmp.with_name(tmp.name + ".pub"), path.with_suffix(".pub"))
        os.replace(tmp, path)
        found = self.get(name)
        if found is None:
            raise HostKeyError(f"ssh-keygen left no usable key at `{path}`")
        return found

    def remove(self, name: str) -> bool:
        """Delete ``name``'s key files; ``False`` if there were none."""
        removed = False
        for path in (self.key_path(name), self.key_path(name).with_suffix(".pub")):
            try:
                path.unlink()
                removed = True
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise HostKeyError(f"cannot remove `{path}`: {exc.strerror}") from None
        return removed

    # -- known_hosts ----------------------------------------------------------------------------
    def _lock(self) -> Path:
        return self.config_dir / f".{KNOWN_HOSTS}.lock"

    def _read(self) -> bytes:
        try:
            return self.known_hosts.read_bytes()
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise HostKeyError(f"cannot read `{self.known_hosts}`: {exc.strerror}") from None

    def _rewrite(self, alias: str, line: bytes | None) -> bool:
        """Replace every line for ``alias`` with ``line`` (``None``: drop them)."""
        try:
            self.config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as exc:
            raise HostKeyError(f"cannot create `{self.config_dir}`: {exc.strerror}") from None
        with locked(self._lock(), error=HostKeyError):
            data = self._read()
            kept = [x for x in data.splitlines(keepends=True) if _alias_of(x) != alias.encode()]
            if kept and not kept[-1].endswith(b"\n"):
                kept[-1] += b"\n"
            new = b"".join(kept) + (line or b"")
            if new == data:
                return False
            write_atomic(self.known_hosts, new, mode=0o600, error=HostKeyError)
            return True

    def trust(self, alias: str, key: HostKey) -> None:
        """Record ``key`` as the only key of ``alias`` (``<name>.envd``) in known_hosts."""
        self._rewrite(alias, f"{alias} {key.public}\n".encode())

    def forget(self, alias: str) -> bool:
        """Drop ``alias``'s line from known_hosts; ``False`` if it had none."""
        if not self.known_hosts.exists():
            return False
        return self._rewrite(alias, None)

    def known(self, alias: str) -> str | None:
        """The public key recorded for ``alias``, or ``None``."""
        for line in self._read().splitlines():
            if _alias_of(line) == alias.encode():
                return b" ".join(line.split()[1:3]).decode("ascii", "replace")
        return None
