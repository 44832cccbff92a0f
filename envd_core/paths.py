"""One error path for the paths a user gives envd and the files it writes.

Every path flag (``--path``, ``--from``, ``--dump-llb``, ``--output dest=``) and every store
write goes through here, so a path that cannot be used is one line naming the path, the cause
(from ``errno``) and what to do — never ``internal error: IsADirectoryError``.

- :func:`path_error` turns an ``OSError`` into that :class:`~envd_core.errors.EnvdError`.
- :func:`check_output_file` / :func:`check_output_dir` validate a destination *before* the
  build runs, so a typo in ``dest=`` does not cost a whole solve.
- :func:`is_dir` / :func:`is_file` answer False instead of raising on a name too long or a
  component that is not a directory.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from envd_core.errors import EnvdError, ValidationError, one_line

#: What to do for the causes users meet, by errno.
_FIXES = {
    errno.ENOENT: "create the parent directory first or fix the path",
    errno.ENOTDIR: "a component of the path is a file, not a directory",
    errno.EISDIR: "it is a directory; name a file inside it",
    errno.EACCES: "check its permissions and the directory's (or pick another place)",
    errno.EPERM: "check its permissions and the directory's (or pick another place)",
    errno.EROFS: "the file system is read-only; pick a writable place",
    errno.ENAMETOOLONG: "a component is longer than the file system allows (255 bytes); "
                        "shorten it",
    errno.ENOSPC: "the disk is full; free space and retry",
    errno.EDQUOT: "the disk quota is exhausted; free space and retry",
    errno.ELOOP: "too many symbolic links; check the links along the path",
    errno.EIO: "the file cannot be written like a regular file (a device or /proc entry?)",
    errno.EINVAL: "the file cannot be written like a regular file (a device or /proc entry?)",
}


def path_error(exc: OSError, action: str, path: str | os.PathLike[str],
               *, what: str = "", invalid: bool = False) -> EnvdError:
    """``cannot <action> <what> `path`: <cause>`` with a fix; ``invalid`` makes it a
    :class:`ValidationError` (a flag's value), else a plain :class:`EnvdError` (exit 1)."""
    cause = exc.strerror or type(exc).__name__
    named = f"{what} `{_short(path)}`" if what else f"`{_short(path)}`"
    message = one_line(f"cannot {action} {named}: {cause}")
    hint = _FIXES.get(exc.errno or 0)
    cls = ValidationError if invalid else EnvdError
    return cls(message, hint=hint)


def fix_for(exc: OSError) -> str | None:
    """What to do about ``exc`` (by errno), for hints of errors raised elsewhere."""
    return _FIXES.get(exc.errno or 0)


def _short(path: str | os.PathLike[str]) -> str:
    """Paths in messages: long components shortened so the line stays readable."""
    text = os.fspath(path)
    parts = [p if len(p) <= 80 else f"{p[:40]}…({len(p)} bytes)" for p in text.split("/")]
    return "/".join(parts)


def is_dir(path: str | os.PathLike[str]) -> bool:
    """``os.path.isdir`` that answers False for any OSError (a name too long included)."""
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False


def is_file(path: str | os.PathLike[str]) -> bool:
    """``os.path.isfile`` that answers False for any OSError (a name too long included)."""
    try:
        return Path(path).is_file()
    except (OSError, ValueError):
        return False


def check_component_lengths(path: str | os.PathLike[str], flag: str) -> None:
    """Refuse a path with a component longer than the file system's NAME_MAX, naming ``flag``."""
    text = os.fspath(path)
    for part in text.split("/"):
        if len(os.fsencode(part)) > _name_max(text):
            raise ValidationError(one_line(
                f"{flag} `{_short(text)}` has a component of {len(os.fsencode(part))} bytes, "
                f"longer than the file system allows ({_name_max(text)})"
            ), hint="shorten that file or directory name")


def _name_max(path: str) -> int:
    probe = path
    while probe:
        try:
            return os.pathconf(probe, "PC_NAME_MAX")
        except (OSError, ValueError):
            parent = os.path.dirname(probe.rstrip("/"))
            if parent == probe:
                break
            probe = parent
    return 255


def check_output_file(path: str | os.PathLike[str], flag: str) -> Path:
    """``path`` can be created or replaced as a regular file; returns it. Raises a
    :class:`ValidationError` naming ``flag``, the path and the cause otherwise."""
    check_component_lengths(path, flag)
    target = Path(path)
    parent = target.parent if str(target.parent) else Path(".")
    if is_dir(target):
        raise ValidationError(one_line(f"{flag} `{_short(target)}` is a directory"),
                              hint="name a file inside it")
    if target.exists() and _in_proc_or_sys(target):
        raise ValidationError(one_line(f"{flag} `{_short(target)}` is a kernel file"),
                              hint="name a regular file")
    _check_parent(parent, flag, target)
    if target.exists() and not os.access(target, os.W_OK):
        raise ValidationError(one_line(f"{flag} `{_short(target)}` is not writable"),
                              hint=_FIXES[errno.EACCES])
    return target


def check_output_dir(path: str | os.PathLike[str], flag: str) -> Path:
    """``path`` is a directory or can be created as one; returns it."""
    check_component_lengths(path, flag)
    target = Path(path)
    if target.exists():
        if not is_dir(target):
            raise ValidationError(one_line(f"{flag} `{_short(target)}` is not a directory"),
                                  hint="name a directory (it is created when missing)")
        if not os.access(target, os.W_OK | os.X_OK):
            raise ValidationError(one_line(f"{flag} `{_short(target)}` is not writable"),
                                  hint=_FIXES[errno.EACCES])
        return target
    # Created with parents at export time: the nearest existing ancestor must be writable.
    ancestor = target.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not is_dir(ancestor):
        raise ValidationError(one_line(
            f"{flag} `{_short(target)}` cannot be created: `{_short(ancestor)}` is not a "
            "directory"), hint=_FIXES[errno.ENOTDIR])
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ValidationError(one_line(
            f"{flag} `{_short(target)}` cannot be created: `{_short(ancestor)}` is not "
            "writable"), hint=_FIXES[errno.EACCES])
    return target


def _check_parent(parent: Path, flag: str, target: Path) -> None:
    if not parent.exists():
        raise ValidationError(one_line(
            f"{flag} `{_short(target)}`: the directory `{_short(parent)}` does not exist"),
            hint=_FIXES[errno.ENOENT])
    if not is_dir(parent):
        raise ValidationError(one_line(
            f"{flag} `{_short(target)}`: `{_short(parent)}` is not a directory"),
            hint=_FIXES[errno.ENOTDIR])
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValidationError(one_line(
            f"{flag} `{_short(target)}`: the directory `{_short(parent)}` is not writable"),
            hint=_FIXES[errno.EACCES])


def _in_proc_or_sys(path: Path) -> bool:
    try:
        resolved = path.resolve()
    except OSError:
        return False
    return resolved.parts[:2] in (("/", "proc"), ("/", "sys"))


def write_file(path: str | os.PathLike[str], data: bytes, flag: str) -> None:
    """Write ``data`` to the user-named ``path`` (``--dump-llb``), one error line on failure."""
    try:
        Path(path).write_bytes(data)
    except OSError as exc:
        raise path_error(exc, "write", path, what=flag) from None
