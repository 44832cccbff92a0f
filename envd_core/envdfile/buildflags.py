"""Parsing of `envd build` flags, with upstream envd's grammar and messages.

- ``--output``: one CSV record (Go ``encoding/csv`` rules) of ``key=value``; ``type`` required.
- ``--export-cache`` / ``--import-cache``: CSV with ``type``, or a bare ref (deprecated registry).
- ``--from file[:func]``, ``--tag`` normalisation, ``--platform`` lists.

Every failure is a :class:`~envd_core.envdfile.errors.BuildOptionError` (exit code 2); nothing here
touches the file system except the ``dest`` checks upstream does.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import attrs

from envd_core.envdfile.errors import BuildOptionError
from envd_core.imageref import is_hex64, reference_problem

DEFAULT_FILE = "build.envd"
DEFAULT_FUNCTION = "build"
DEFAULT_PLATFORM = "linux/amd64"
#: Exporters that write one file (tarball); ``dest`` empty or ``-`` means stdout.
FILE_EXPORTERS = ("tar", "oci", "docker")


@attrs.frozen
class OutputSpec:
    """One ``--output``: exporter ``type``, its attributes, and where the result goes.

    ``dest_kind`` is ``"dir"`` (local exporter), ``"file"``, ``"stdout"`` or ``None`` (the
    exporter keeps the result, e.g. ``image``/``moby``); ``dest`` is stripped from ``attrs``
    whenever the client handles it, as upstream does.
    """

    type: str
    attrs: dict[str, str]
    dest: str | None = None
    dest_kind: str | None = None


@attrs.frozen
class CacheSpec:
    """One cache import/export entry (``type`` plus attributes such as ``ref`` and ``mode``)."""

    type: str
    attrs: dict[str, str]


@attrs.frozen
class FromSpec:
    """``--from``: the build file and its entry function."""

    file: str = DEFAULT_FILE
    function: str = DEFAULT_FUNCTION


# ------------------------------------------------------------------ CSV
def read_csv_record(text: str, flag: str) -> list[str]:
    """The first record of ``text`` parsed like Go's ``encoding/csv`` ``Reader.Read``.

    Quoted fields may contain commas, newlines and doubled quotes; a quote inside an unquoted
    field or stray text after a closing quote is an error (Go's ErrBareQuote / ErrQuote).
    """
    lines = text.replace("\r\n", "\n")
    # Go skips empty lines before the first record.
    pos, line_no = 0, 1
    while pos < len(lines) and lines[pos] == "\n":
        pos += 1
        line_no += 1
    if pos >= len(lines):
        raise BuildOptionError(f"{flag} value is empty; give key=value pairs such as `type=...`")
    fields: list[str] = []
    start_line = line_no
    while True:
        col = pos
        if pos < len(lines) and lines[pos] == '"':
            pos += 1
            buf = []
            while True:
                if pos >= len(lines):
                    raise BuildOptionError(
                        f"{flag}: parse error on line {start_line}, column {col + 1}: "
                        "extraneous or missing \" in quoted-field"
                    )
                ch = lines[pos]
                if ch == '"':
                    if pos + 1 < len(lines) and lines[pos + 1] == '"':
                        buf.append('"')
                        pos += 2
                        continue
                    pos += 1
                    if pos < len(lines) and lines[pos] not in ",\n":
                        raise BuildOptionError(
                            f"{flag}: parse error on line {line_no}, column {pos + 1}: "
                            "extraneous or missing \" in quoted-field"
                        )
                    break
                if ch == "\n":
                    line_no += 1
                buf.append(ch)
                pos += 1
            fields.append("".join(buf))
        else:
            end = pos
            while end < len(lines) and lines[end] not in ",\n":
                if lines[end] == '"':
                    raise BuildOptionError(
                        f"{flag}: parse error on line {line_no}, column {end + 1}: "
                        "bare \" in non-quoted-field"
                    )
                end += 1
            fields.append(lines[pos:end])
            pos = end
        if pos < len(lines) and lines[pos] == ",":
            pos += 1
            continue
        return fields


def _key_values(text: str, flag: str) -> tuple[str, dict[str, str]]:
    """``type`` and the other attributes (keys lower-cased) of one CSV record."""
    kind = ""
    attrs_: dict[str, str] = {}
    for field in read_csv_record(text, flag):
        key, sep, value = field.partition("=")
        if not sep:
            raise BuildOptionError(
                f"invalid value {field} in {flag}: expected key=value (got `{field}`)"
            )
        key = key.lower()
        if key == "type":
            kind = value
        else:
            attrs_[key] = value
    return kind, attrs_


# ------------------------------------------------------------------ --output
#: Exporter attributes BuildKit parses with Go's strconv.ParseBool: checked here, before the
#: solve, rather than by the daemon after it.
_BOOL_ATTRS = frozenset({"push", "push-by-digest", "insecure", "unpack", "oci-mediatypes",
                         "force-compression", "store", "rewrite-timestamp", "oci-artifact"})
_GO_BOOLS = frozenset({"1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false",
                       "False"})


def parse_output(text: str | None, *, stdout_is_tty: bool | None = None) -> OutputSpec | None:
    """Parse ``--output``; None when the flag is absent or empty.

    ``stdout_is_tty`` defaults to ``sys.stdout.isatty()``: a tarball is never written to a
    terminal.
    """
    if not text:
        return None
    kind, attrs_ = _key_values(text, "--output")
    if not kind:
        raise BuildOptionError(f"--output requires type=<type> (got `{text}`)")
    if "output" in attrs_:
        v = attrs_["output"]
        raise BuildOptionError(f"output={v} not supported for --output, you meant dest={v}?")
    for key in sorted(_BOOL_ATTRS & attrs_.keys()):
        if attrs_[key] not in _GO_BOOLS:
            raise BuildOptionError(
                f"--output {key}=`{attrs_[key]}` is not a boolean; use {key}=true or "
                f"{key}=false"
            )
    dest = attrs_.get("dest", "")
    if kind == "local":
        if not dest:
            raise BuildOptionError(
                "invalid output option: output directory is required for local exporter; "
                "add `dest=<dir>`"
            )
        del attrs_["dest"]
        return OutputSpec(kind, attrs_, dest, "dir")
    if kind in FILE_EXPORTERS:
        attrs_.pop("dest", None)
        if dest and dest != "-":
            if os.path.isdir(dest):
                raise BuildOptionError(
                    f"invalid output option: destination file is a directory: `{dest}`"
                )
            return OutputSpec(kind, attrs_, dest, "file")
        tty = sys.stdout.isatty() if stdout_is_tty is None else stdout_is_tty
        if tty:
            raise BuildOptionError(
                f"invalid output option: output file is required for {kind} exporter. "
                "refusing to write to console; add `dest=<file>` or redirect stdout"
            )
        return OutputSpec(kind, attrs_, "-", "stdout")
    if dest:
        raise BuildOptionError(
            f"invalid output option: output {dest} is not supported by {kind} exporter"
        )
    return OutputSpec(kind, attrs_, None, None)


# ------------------------------------------------------------------ caches
def parse_export_cache(values: list[str] | tuple[str, ...] | str | None) -> list[CacheSpec]:
    """``--export-cache`` entries; a bare ref is ``type=registry,ref=<ref>``; mode=min default."""
    out = []
    for value in _as_list(values):
        if not value:
            continue
        if "type=" not in value:
            out.append(CacheSpec("registry", {"mode": "min", "ref": value}))
            continue
        kind, attrs_ = _key_values(value, "--export-cache")
        if not kind:
            raise BuildOptionError(f"--export-cache requires type=<type> (got `{value}`)")
        attrs_.setdefault("mode", "min")
        out.append(CacheSpec(kind, attrs_))
    return out


def parse_import_cache(values: list[str] | tuple[str, ...] | str | None) -> list[CacheSpec]:
    """``--import-cache`` entries; a bare ref is ``type=registry,ref=<ref>``."""
    out = []
    for value in _as_list(values):
        if not value:
            continue
        if "type=" not in value:
            out.append(CacheSpec("registry", {"ref": value}))
            continue
        kind, attrs_ = _key_values(value, "--import-cache")
        if not kind:
            raise BuildOptionError(f"--import-cache requires type=<type> (got `{value}`)")
        out.append(CacheSpec(kind, attrs_))
    return out


def _as_list(values: list[str] | tuple[str, ...] | str | None) -> list[str]:
    if values is None:
        return []
    return [values] if isinstance(values, str) else list(values)


# ------------------------------------------------------------------ --from
def parse_from(text: str | None) -> FromSpec:
    """``file[:func]``; empty parts fall back to ``build.envd`` / ``build``."""
    if not text:
        return FromSpec()
    if ":" not in text:
        return FromSpec(file=text)
    parts = text.split(":")
    if len(parts) != 2:
        raise BuildOptionError(f"invalid from format, expected `file:func` (got `{text}`)")
    return FromSpec(file=parts[0] or DEFAULT_FILE, function=parts[1] or DEFAULT_FUNCTION)


def locate_build_file(context_dir: Path, spec: FromSpec, cwd: Path | None = None) -> Path:
    """``<context>/<file>`` if it exists, else ``<file>`` relative to the working directory."""
    from envd_core.paths import check_component_lengths, is_file

    check_component_lengths(spec.file, "--from")
    candidate = Path(context_dir) / spec.file
    if is_file(candidate):
        return candidate.absolute()
    return (Path(cwd or Path.cwd()) / spec.file).absolute()


# ------------------------------------------------------------------ --tag
def default_tag(context_dir: Path) -> str:
    """Upstream's default: ``<basename of the build context>:dev``."""
    return f"{Path(context_dir).absolute().name}:dev"


def normalize_tag(
    tag: str | None,
    context_dir: Path | None = None,
    *,
    warn: Callable[[str], None] | None = None,
) -> str:
    """Normalise ``--tag`` like upstream's NormalizeName.

    Rejects 64-hex names, lower-cases the part before the first ``:`` (calling ``warn``),
    removes spaces and requires a valid reference.
    """
    if not tag:
        if context_dir is None:
            raise BuildOptionError("--tag is empty and there is no build context to name it after")
        tag = default_tag(context_dir)
    if is_hex64(tag):
        raise BuildOptionError(
            f"invalid repository name ({tag}), cannot specify 64-byte hexadecimal strings, "
            "please rename it"
        )
    head, sep, rest = tag.partition(":")
    if head.lower() != head:
        lowered = head.lower() + sep + rest
        if warn:
            warn(
                f"The image name `{head}` is not lower-case; the image will be named `{lowered}`"
            )
        tag = lowered
    tag = tag.replace(" ", "")
    problem = reference_problem(tag)
    if problem is not None:
        raise BuildOptionError(
            f"failed to parse the name `{tag}`: {problem}; please provide a valid image name"
        )
    return tag


_CONTAINER_NAME_RE = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")


def environment_name(context_dir: Path) -> str:
    """Upstream's environment name: legal container-name runs of the directory name, <= 30."""
    base = Path(context_dir).absolute().name
    name = "".join(_CONTAINER_NAME_RE.findall(base))[:30]
    if not name:
        raise BuildOptionError(
            f"cannot create a legal environment name from the directory `{base}`; "
            "rename it to start with a letter or digit"
        )
    return name


# ------------------------------------------------------------------ --platform
_ARCH_ALIASES = {
    "x86_64": "amd64", "x86-64": "amd64", "aarch64": "arm64", "armhf": "arm", "armel": "arm",
    "i386": "386", "i686": "386",
}
_KNOWN_OS = {"linux", "windows", "darwin", "freebsd"}
_KNOWN_ARCH = {"amd64", "arm64", "arm", "386", "ppc64le", "s390x", "riscv64", "mips64le"}


def parse_platforms(text: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``--platform`` as a list of ``os/arch[/variant]``; empty means ``linux/amd64``."""
    raw: list[str] = []
    for item in _as_list(text):
        raw.extend(p.strip() for p in item.split(","))
    raw = [p for p in raw if p]
    if not raw:
        return [DEFAULT_PLATFORM]
    return list(dict.fromkeys(normalize_platform(item) for item in raw))


def normalize_platform(text: str) -> str:
    """``linux/x86_64`` → ``linux/amd64``; ``arm64`` → ``linux/arm64``; errors name the input."""
    parts = text.strip().lower().split("/")
    if len(parts) == 1:
        parts = ["linux", parts[0]]
    if len(parts) not in (2, 3) or not all(parts):
        raise BuildOptionError(
            f"--platform `{text}` is not a platform; use os/arch[/variant], e.g. `linux/amd64`"
        )
    os_, arch = parts[0], _ARCH_ALIASES.get(parts[1], parts[1])
    if os_ not in _KNOWN_OS:
        raise BuildOptionError(
            f"--platform `{text}` has an unknown OS `{os_}`; use one of: "
            f"{', '.join(sorted(_KNOWN_OS))}"
        )
    if arch not in _KNOWN_ARCH:
        raise BuildOptionError(
            f"--platform `{text}` has an unknown architecture `{parts[1]}`; use one of: "
            f"{', '.join(sorted(_KNOWN_ARCH))}"
        )
    variant = parts[2] if len(parts) == 3 else ""
    if arch == "arm64" and variant == "v8":
        variant = ""  # containerd's normalisation: arm64/v8 is plain arm64
    return f"{os_}/{arch}" + (f"/{variant}" if variant else "")


def platform_tag(tag: str, platform: str, *, multi: bool) -> str:
    """With several platforms, upstream suffixes the tag with ``-os-arch``."""
    if not multi:
        return tag
    os_, arch = platform.split("/")[:2]
    return f"{tag}-{os_}-{arch}"
