"""Typed options that builder and runner types declare (``--builder-opt key=value``).

A builder or runner type lists its options as :class:`Option` objects. The core parses what the
user typed against that list: unknown keys, wrong types and missing files are refused with one
line naming the key. Values are stored as strings in the context file, so the file stays readable
and plugin-independent; :meth:`Option.convert` turns a stored string back into a Python value.

File options (``kind="path"``) are stored **by reference**: the absolute path, never the file's
contents. Export/import of contexts therefore never copies a key or certificate.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import attrs

from envd_core.errors import ValidationError

OptionKind = Literal["str", "path", "bool", "int", "choice"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@attrs.frozen
class Option:
    """One ``key=value`` option a builder or runner type accepts.

    Example::

        Option("tlscacert", "CA certificate that signed the daemon's certificate", kind="path")
    """

    name: str
    help: str
    kind: OptionKind = "str"
    choices: tuple[str, ...] = ()
    default: str | None = None

    def parse(self, raw: str, *, cwd: str | None = None) -> str:
        """Validate ``raw`` as typed by the user and return the string to store."""
        value = raw.strip()
        if self.kind == "path":
            if not value:
                raise ValidationError(f"option `{self.name}` needs a file path")
            path = os.path.abspath(os.path.join(cwd or os.getcwd(), os.path.expanduser(value)))
            if not os.path.exists(path):
                raise ValidationError(
                    f"option `{self.name}`: file `{path}` does not exist",
                    hint="options that name files are stored by reference; create the file first",
                )
            # Every path option names a file a daemon or TLS library reads: a directory or a
            # device (`/tmp`, `/dev/null`) would only fail later, at connect or build time.
            if not os.path.isfile(path):
                raise ValidationError(
                    f"option `{self.name}`: `{path}` is not a regular file",
                    hint="name the file itself (a PEM file, a buildkitd.toml, ...)",
                )
            if not os.access(path, os.R_OK):
                raise ValidationError(f"option `{self.name}`: file `{path}` is not readable",
                                      hint="check its permissions")
            return path
        if self.kind == "bool":
            lowered = value.lower()
            if lowered in _TRUE or value == "":
                return "true"
            if lowered in _FALSE:
                return "false"
            raise ValidationError(f"option `{self.name}` expects true or false, got `{raw}`")
        if self.kind == "int":
            try:
                if not value.isascii():  # int() takes any Unicode digit: `١٢٣` is 123
                    raise ValueError(value)
                return str(int(value, 10))
            except ValueError:
                raise ValidationError(
                    f"option `{self.name}` expects a whole number, got `{raw}`"
                ) from None
        if self.kind == "choice":
            if value not in self.choices:
                raise ValidationError(
                    f"option `{self.name}` must be one of {', '.join(self.choices)}; got `{raw}`"
                )
            return value
        if not value:
            raise ValidationError(
                f"option `{self.name}` needs a value (`{self.name}=<value>`); leave the option "
                "out to use the default"
            )
        return value

    def convert(self, stored: str) -> str | bool | int:
        """Turn a stored string into the Python value a plugin works with."""
        if self.kind == "bool":
            return stored.lower() in _TRUE
        if self.kind == "int":
            return int(stored)
        return stored


def option_value(declared: Iterable[Option], values: Mapping[str, str], key: str) -> Any:
    """The converted value of option ``key``: the given string, else its declared default.

    ``None`` when neither is set. A key that is not declared raises :class:`KeyError` (a bug in
    the caller, not bad input). Builders and runners read their options through this.
    """
    for opt in declared:
        if opt.name == key:
            raw = values.get(key, opt.default)
            return None if raw is None else opt.convert(raw)
    raise KeyError(key)


def parse_pairs(pairs: Iterable[str], *, flag: str) -> dict[str, str]:
    """Split ``key=value`` strings as given to a repeatable flag; later keys win."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValidationError(f"{flag} expects key=value, got `{pair}`")
        result[key] = value
    return result


def parse_options(
    declared: Iterable[Option],
    given: Mapping[str, str],
    *,
    owner: str,
    cwd: str | None = None,
) -> dict[str, str]:
    """Check ``given`` against the options ``owner`` declares and return the values to store."""
    by_name = {opt.name: opt for opt in declared}
    result: dict[str, str] = {}
    for key, raw in given.items():
        opt = by_name.get(key)
        if opt is None:
            known = ", ".join(sorted(by_name)) or "none"
            raise ValidationError(f"{owner} has no option `{key}` (known options: {known})")
        result[key] = opt.parse(raw, cwd=cwd)
    return result
