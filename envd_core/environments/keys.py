"""The SSH key pair envd uses to reach its environments (``id_rsa_envd``, mode 0600).

Upstream envd keeps it at ``~/.config/envd/id_rsa_envd{,.pub}`` (RSA-4096, PEM). We reuse that
pair when it exists, so both tools reach the same environments; otherwise the pair lives in the
envd config directory and is generated on first use with the system's ``ssh-keygen``.
"""

from __future__ import annotations

import os
from pathlib import Path

from envd_core.atomic import locked
from envd_core.errors import EnvdError

__all__ = ["KEY_NAME", "KeyError_", "ensure_key_pair", "find_key_pair"]

KEY_NAME = "id_rsa_envd"


class KeyError_(EnvdError):  # `KeyError` is a builtin
    """The key pair cannot be found or generated."""


def _upstream_dir() -> Path:
    # upstream hard-codes this path (no XDG, no override)
    return Path.home() / ".config" / "envd"


def find_key_pair(config_dir: Path) -> Path | None:
    """The private key to use: the config dir's, else upstream's; ``None`` when neither exists."""
    for directory in (config_dir, _upstream_dir()):
        key = directory / KEY_NAME
        if key.is_file() and key.with_suffix(".pub").is_file():
            return key
    return None


def ensure_key_pair(config_dir: Path) -> Path:
    """The private key, generating the pair in ``config_dir`` on first use."""
    found = find_key_pair(config_dir)
    if found is not None:
        return found
    import shutil  # with subprocess: only for the first generation, not every build's key
    import subprocess

    keygen = shutil.which("ssh-keygen")
    if keygen is None:
        raise KeyError_(
            "cannot generate envd's SSH key: `ssh-keygen` is not installed",
            hint="install the OpenSSH client (apt-get install openssh-client)",
        )
    try:
        config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise KeyError_(f"cannot create `{config_dir}`: {exc.strerror}") from None
    key = config_dir / KEY_NAME
    with locked(config_dir / f".{KEY_NAME}.lock", error=KeyError_):
        if key.is_file() and key.with_suffix(".pub").is_file():
            return key  # another envd made it while we waited
        tmp = config_dir / f".{KEY_NAME}.{os.getpid()}.tmp"
        for stale in (tmp, tmp.with_name(tmp.name + ".pub")):
            stale.unlink(missing_ok=True)
        proc = subprocess.run(
            [keygen, "-q", "-t", "rsa", "-b", "4096", "-m", "PEM", "-N", "", "-C", "envd",
             "-f", str(tmp)],
            capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL,
        )
        if proc.returncode != 0:
            raise KeyError_(f"ssh-keygen failed: {proc.stderr.strip() or proc.returncode}")
        os.chmod(tmp, 0o600)
        os.chmod(tmp.with_name(tmp.name + ".pub"), 0o600)
        # the public key first: a private key without its .pub is never taken as a pair
        os.replace(tmp.with_name(tmp.name + ".pub"), key.with_suffix(".pub"))
        os.replace(tmp, key)
    return key
