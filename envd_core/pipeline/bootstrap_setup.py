"""The setup stages of ``envd bootstrap`` before the builder's own: upstream envd's flags.

Upstream's ``envd bootstrap`` runs stages in order and logs each as ``[i/N] Bootstrap NAME``:
the SSH key, the registry CA key pair, the registry JSON config, shell completion, BuildKit.
This module holds the work of the first four and the checks of their flags; the CLI prints the
stage lines and :mod:`envd_core.pipeline.bootstrap` does the BuildKit stage.

Where ours differs from upstream, on purpose:

- registry settings are not written into one global ``buildkitd.toml`` that every later
  ``envd build`` overwrites (upstream's); they become the ``registry-config`` option of the
  context in force, so the builder that starts the daemon applies them, and a running daemon
  started with other settings is reported stale (``--force`` recreates it);
- files are referenced by absolute path, never copied into the config directory, and the
  config directory is never mounted into a daemon.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from envd_core.errors import EnvdError, ValidationError

__all__ = [
    "RegistryFlags",
    "install_completion",
    "install_ssh_keypair",
    "parse_ca_keypair",
    "registry_document",
]

_KEYPAIR_PARTS = ("ca", "key", "cert")


@attrs.define
class RegistryFlags:
    """The registry flags of ``envd bootstrap``, as given."""

    mirror: str | None = None
    registry: str = "docker.io"
    use_http: bool = False
    ca_keypair: str | None = None
    config: str | None = None

    @property
    def given(self) -> bool:
        """Whether any flag asks for registry settings (``--registry`` alone does not)."""
        return bool(self.mirror or self.ca_keypair or self.config or self.use_http)


def parse_ca_keypair(value: str) -> dict[str, str]:
    """``ca=/p/ca.pem,key=/p/key.pem,cert=/p/cert.pem``: exactly those three, each once, and
    each file present (upstream's rule). Returns absolute paths by part."""
    found: dict[str, str] = {}
    parts = [p for p in value.split(",") if p.strip()]
    for part in parts:
        name, sep, path = part.partition("=")
        name = name.strip()
        if not sep or name not in _KEYPAIR_PARTS or not path.strip():
            raise ValidationError(
                f"invalid --registry-ca-keypair part `{part}`",
                hint="give ca=/path/ca.pem,key=/path/key.pem,cert=/path/cert.pem",
            )
        if name in found:
            raise ValidationError(f"--registry-ca-keypair names `{name}` twice")
        found[name] = os.path.abspath(os.path.expanduser(path.strip()))
    missing = [p for p in _KEYPAIR_PARTS if p not in found]
    if missing:
        raise ValidationError(
            f"--registry-ca-keypair lacks `{'`, `'.join(missing)}`",
            hint="give ca=/path/ca.pem,key=/path/key.pem,cert=/path/cert.pem",
        )
    for name in _KEYPAIR_PARTS:
        if not os.path.isfile(found[name]):
            raise ValidationError(f"--registry-ca-keypair: {name} file `{found[name]}` "
                                  "does not exist")
    return found


def _check_config_file(path: str) -> str:
    """Upstream's checks on a ``--registry-config`` JSON; returns its absolute path."""
    full = os.path.abspath(os.path.expanduser(path))
    try:
        with open(full, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        raise ValidationError(f"--registry-config file `{full}` does not exist") from None
    except (OSError, ValueError) as exc:
        raise ValidationError(f"--registry-config `{full}` is not readable JSON: {exc}") \
            from None
    entries = data.get("registries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValidationError(f'--registry-config `{full}` needs {{"registries": [...]}}')
    base = os.path.dirname(full)
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("name"):
            raise ValidationError(
                f"`name` key is required in the config for registry at index {index}",
                hint=f"fix `{full}`",
            )
        for kind in _KEYPAIR_PARTS:
            if entry.get(kind):
                file_path = os.path.join(base, os.path.expanduser(str(entry[kind])))
                if not os.path.isfile(file_path):
                    raise ValidationError(
                        f"--registry-config: {kind} file `{file_path}` of registry "
                        f"`{entry['name']}` does not exist", hint=f"fix `{full}`")
    return full


def registry_document(flags: RegistryFlags) -> tuple[str | None, dict[str, Any] | None]:
    """What the registry flags ask for: ``(path, None)`` for ``--registry-config PATH``,
    ``(None, document)`` for a document in that file's format made from the other flags,
    ``(None, None)`` when no flag asks for registry settings. Checks as upstream does."""
    if flags.config and flags.ca_keypair:
        raise ValidationError("--registry-config cannot be combined with --registry-ca-keypair",
                              hint="put the CA, cert and key into the JSON file instead")
    if flags.ca_keypair and not flags.mirror:
        raise ValidationError("`registry-ca-keypair` should be used with `dockerhub-mirror`")
    if flags.config:
        return _check_config_file(flags.config), None
    if not flags.given:
        return None, None
    entry: dict[str, Any] = {"name": flags.registry or "docker.io", "use_http": flags.use_http}
    if flags.mirror:
        entry["mirror"] = flags.mirror
    if flags.ca_keypair:
        entry.update(parse_ca_keypair(flags.ca_keypair))
    return None, {"registries": [entry]}


# -- SSH key --------------------------------------------------------------------------------


def install_ssh_keypair(config_dir: Path, pubkey: str, privkey: str,
                        report: Callable[[str], None]) -> Path:
    """Make ``pubkey``/``privkey`` envd's key pair (upstream's ``--ssh-keypair``).

    An existing pair is kept under a new name (``envd_<random>.pk``), and the ``*.envd``
    entries of ``~/.ssh/config`` that used it are pointed at that name, so environments made
    with the old key stay reachable. The public key gets mode 0644, the private key 0600.
    """
    from envd_core.atomic import write_atomic
    from envd_core.environments.keys import KEY_NAME, find_key_pair

    sources = {}
    for what, path in (("public", pubkey), ("private", privkey)):
        full = Path(os.path.expanduser(path)).absolute()
        if not full.is_file():
            raise ValidationError(f"--ssh-keypair: {what} key `{full}` does not exist")
        sources[what] = full
    key = config_dir / KEY_NAME
    if sources["private"] == key:
        return key  # already the pair in use
    config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    old = find_key_pair(config_dir)
    if old is not None and old.parent == config_dir:
        backup = config_dir / f"envd_{secrets.token_hex(4)}.pk"
        shutil.copy2(old, backup)
        os.chmod(backup, 0o600)
        moved = repoint_identity_files(str(old), str(backup))
        report(f"kept the previous private key as {backup}"
               + (f"; {moved} SSH config entr{'y' if moved == 1 else 'ies'} now use it"
                  if moved else ""))
    write_atomic(key.with_suffix(".pub"), sources["public"].read_bytes(), mode=0o644,
                 error=ValidationError)
    write_atomic(key, sources["private"].read_bytes(), mode=0o600, error=ValidationError)
    return key


def repoint_identity_files(old: str, new: str, path: Path | None = None) -> int:
    """In envd's own ``~/.ssh/config`` blocks, make ``IdentityFile "old"`` read ``new``.

    Only lines inside blocks that start with envd's comment are touched (the user's bytes stay
    as they are); returns how many were changed.
    """
    from envd_core.atomic import locked, write_atomic
    from envd_core.environments.sshconfig import COMMENT, SSHConfigError, default_path

    target = path or default_path()
    if not target.is_file():
        return 0
    changed = 0
    with locked(target.parent / ".envd-config.lock", error=SSHConfigError):
        lines = target.read_bytes().splitlines(keepends=True)
        state = 0  # 0: outside envd's blocks; 1: after its comment; 2: in its Host block
        wanted = f'IdentityFile "{old}"'.encode()
        for index, line in enumerate(lines):
            stripped = line.strip()
            if stripped == COMMENT:
                state = 1
            elif not stripped:
                continue
            elif not line[:1].isspace():  # a Host line (or any top-level line) ends a block
                state = 2 if state == 1 and stripped.startswith(b"Host ") else 0
            elif state == 2 and stripped == wanted:
                lines[index] = line.replace(old.encode(), new.encode())
                changed += 1
        if changed:
            write_atomic(target, b"".join(lines), mode=target.stat().st_mode & 0o777,
                         error=SSHConfigError)
    return changed


# -- shell completion -----------------------------------------------------------------------


def completion_target(shell_env: str | None = None) -> tuple[str, Path]:
    """The shell (from ``$SHELL``, falling back to bash as upstream does) and the file its
    completion loader reads for ``envd`` without any change to the user's rc files."""
    shell = os.path.basename(shell_env if shell_env is not None else os.environ.get("SHELL", ""))
    if shell not in ("bash", "zsh", "fish"):
        shell = "bash"
    home = Path.home()
    data = Path(os.environ.get("XDG_DATA_HOME") or home / ".local" / "share")
    config = Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config")
    if shell == "bash":  # bash-completion loads completions/<command> on first use
        return shell, data / "bash-completion" / "completions" / "envd"
    if shell == "fish":
        return shell, config / "fish" / "completions" / "envd.fish"
    # zsh: a directory in $fpath; site-functions under the user's data dir is the convention
    # zsh plugin managers use, and the message tells the user to add it to fpath if needed
    return shell, data / "zsh" / "site-functions" / "_envd"


def completion_script(root: Any, shell: str) -> str:
    """Click's completion script of ``root`` (the ``envd`` group) for ``shell``."""
    from click.shell_completion import get_completion_class

    cls = get_completion_class(shell)
    if cls is None:  # pragma: no cover - click ships bash, zsh and fish
        raise EnvdError(f"no completion support for `{shell}`")
    return str(cls(root, {}, "envd", "_ENVD_COMPLETE").source())


def install_completion(root: Any, shell_env: str | None = None) -> tuple[str, Path]:
    """Write the completion script for ``root`` (the ``envd`` click group); ``(shell, path)``.

    Raises :class:`EnvdError` with one line when it cannot; the caller only warns (upstream:
    failures here are warnings).
    """
    from envd_core.atomic import write_atomic

    shell, path = completion_target(shell_env)
    script = completion_script(root, shell)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EnvdError(f"cannot create `{path.parent}`: {exc.strerror}") from None
    write_atomic(path, script.encode(), mode=0o644, error=EnvdError)
    return shell, path
