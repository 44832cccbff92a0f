"""From a context's builder options to the daemon to run: image, buildkitd.toml, files, flags.

Everything here is pure (no Docker): it reads the files the options name and produces a
:class:`DaemonSpec`. The spec's :attr:`~DaemonSpec.fingerprint` is stored on the container as a
label, so a later bootstrap can tell that the image or the configuration changed (the container
is then *stale* and recreated only with ``force``).

Registry settings come from four options that merge per registry host:

``registry-config``
    upstream ``envd bootstrap --registry-config`` JSON:
    ``{"registries": [{"name", "ca", "cert", "key", "use_http", "mirror"}]}``;
``mirror``
    Docker Hub mirrors, comma-separated (upstream ``--dockerhub-mirror``);
``insecure-registries``
    hosts reached over plain HTTP, comma-separated;
``registry-ca``
    ``host=/path/ca.pem`` pairs, comma-separated.

CA, certificate and key files are copied into the container (``/etc/envd-buildkit/certs``);
nothing from the host is bind-mounted into the daemon, least of all envd's config directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from envd_core.errors import ValidationError

#: In-container directory holding the generated config and the registry certificates.
CONFIG_DIR = "/etc/envd-buildkit"
CONFIG_FILE = f"{CONFIG_DIR}/buildkitd.toml"
SOCKET = "unix:///run/buildkit/buildkitd.sock"
STATE_DIR = "/var/lib/buildkit"
#: ``security=rootless``: the moby/buildkit:<v>-rootless layout (user 1000, rootlesskit).
ROOTLESS_UID = 1000
ROOTLESS_SOCKET = f"unix:///run/user/{ROOTLESS_UID}/buildkit/buildkitd.sock"
ROOTLESS_STATE_DIR = "/home/user/.local/share/buildkit"
#: rootlesskit shares the container's network (the container's own network mode decides) and
#: gives buildkitd writable copies of /etc and /run inside its user namespace.
ROOTLESS_ENTRYPOINT = ("rootlesskit", "--net=host", "--copy-up=/etc", "--copy-up=/run",
                       "buildkitd")

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?(:[0-9]{1,5})?$")
_FILE_KINDS = ("ca", "cert", "key")

# Docker mounts cgroup v1 hierarchies read-only into a container that is not privileged, and
# runc inside then cannot create the cgroups of build steps. With CAP_SYS_ADMIN the daemon may
# remount its own view read-write; on a privileged container (already rw) this changes nothing.
ENTRY_SCRIPT = (
    "for d in /sys/fs/cgroup /sys/fs/cgroup/*/; do "
    '[ -d "$d" ] && mount -o remount,rw,bind "$d" 2>/dev/null; done; '
    'exec buildkitd "$@"'
)


@dataclass
class RegistrySettings:
    """What buildkitd.toml says about one registry host."""

    mirrors: list[str] = field(default_factory=list)
    http: bool = False
    insecure: bool = False
    files: dict[str, str] = field(default_factory=dict)  # ca/cert/key -> host path


@dataclass(frozen=True)
class DaemonSpec:
    """Everything that decides how the BuildKit container is created."""

    image: str
    network: str | None
    volume: str | None
    security: str
    flags: tuple[str, ...]
    config_toml: str
    #: In-container path -> file contents, written into the container before it starts.
    files: Mapping[str, bytes]

    @property
    def rootless(self) -> bool:
        """BuildKit runs as user 1000 under rootlesskit inside the container."""
        return self.security == "rootless"

    @property
    def entrypoint(self) -> list[str]:
        if self.rootless:
            return list(ROOTLESS_ENTRYPOINT)
        return ["sh", "-c", ENTRY_SCRIPT, "buildkitd"]

    @property
    def socket(self) -> str:
        """Where buildkitd listens inside the container (``buildctl dial-stdio`` dials it)."""
        return ROOTLESS_SOCKET if self.rootless else SOCKET

    @property
    def state_dir(self) -> str:
        return ROOTLESS_STATE_DIR if self.rootless else STATE_DIR

    @property
    def file_owner(self) -> int:
        """The uid the config files belong to inside (the daemon must read its keys)."""
        return ROOTLESS_UID if self.rootless else 0

    @property
    def command(self) -> list[str]:
        """Arguments after the entry point: buildkitd's own flags."""
        rootless = ["--root", ROOTLESS_STATE_DIR] if self.rootless else []
        return ["--config", CONFIG_FILE, "--addr", self.socket, *rootless, *self.flags]

    @property
    def fingerprint(self) -> str:
        """A digest of what the container was created from (image ref, config, files, flags)."""
        h = hashlib.sha256()
        parts = {
            "image": self.image,
            "entry": ENTRY_SCRIPT if not self.rootless else list(ROOTLESS_ENTRYPOINT),
            "network": self.network or "",
            "volume": self.volume or "",
            "security": self.security,
            "flags": list(self.flags),
            "config": self.config_toml,
            "files": {p: hashlib.sha256(c).hexdigest() for p, c in sorted(self.files.items())},
        }
        h.update(json.dumps(parts, sort_keys=True).encode())
        return h.hexdigest()[:32]


def split_list(value: str | None) -> list[str]:
    """``"a, b,,c"`` -> ``["a", "b", "c"]``."""
    return [item.strip() for item in (value or "").split(",") if item.strip()]


def _host(value: str, what: str) -> str:
    """A registry host as buildkitd.toml keys it: ``https://h:5000/`` -> ``h:5000``."""
    host = value.strip()
    for scheme in ("https://", "http://"):
        if host.lower().startswith(scheme):
            host = host[len(scheme):]
    host = host.rstrip("/")
    if not _HOST_RE.match(host):
        raise ValidationError(
            f"{what}: `{value}` is not a registry host such as `mirror.corp:5000`")
    return host


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise ValidationError(
            f"{what}: file `{path}` does not exist",
            hint="fix the path, or update the context with `envd context update`",
        ) from None
    except OSError as exc:
        raise ValidationError(f"{what}: cannot read `{path}`: {exc.strerror}") from None


def load_registry_config(path: str) -> dict[str, RegistrySettings]:
    """Parse upstream's ``--registry-config`` JSON; every named file must exist."""
    what = f"option `registry-config` (`{path}`)"
    try:
        data = json.loads(_read(path, what))
    except ValueError as exc:
        raise ValidationError(f"{what} is not JSON: {exc}") from None
    entries = data.get("registries") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise ValidationError(f'{what} needs {{"registries": [...]}}')
    found: dict[str, RegistrySettings] = {}
    base = os.path.dirname(os.path.abspath(path))
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict) or not entry.get("name"):
            raise ValidationError(
                f"{what}: `name` key is required for the registry at index {index}")
        host = _host(str(entry["name"]), what)
        reg = found.setdefault(host, RegistrySettings())
        if entry.get("mirror"):
            reg.mirrors.append(_host(str(entry["mirror"]), what))
        if entry.get("use_http"):
            reg.http = True
        for kind in _FILE_KINDS:
            if entry.get(kind):
                file_path = os.path.join(base, os.path.expanduser(str(entry[kind])))
                if not os.path.isfile(file_path):
                    raise ValidationError(
                        f"{what}: {kind} file `{file_path}` for registry `{host}` does not exist",
                        hint="fix the path in the JSON file; nothing was created",
                    )
                reg.files[kind] = file_path
        if ("cert" in reg.files) != ("key" in reg.files):
            raise ValidationError(f"{what}: registry `{host}` needs both `cert` and `key`")
    return found


def registries(options: Mapping[str, str]) -> dict[str, RegistrySettings]:
    """Merge the registry options into one setting per host (files checked to exist)."""
    found: dict[str, RegistrySettings] = {}
    if options.get("registry-config"):
        found.update(load_registry_config(options["registry-config"]))
    for mirror in split_list(options.get("mirror")):
        hub = found.setdefault("docker.io", RegistrySettings())
        hub.mirrors.append(_host(mirror, "option `mirror`"))
    for host in split_list(options.get("insecure-registries")):
        reg = found.setdefault(_host(host, "option `insecure-registries`"), RegistrySettings())
        reg.http = reg.insecure = True
    for pair in split_list(options.get("registry-ca")):
        host, sep, path = pair.partition("=")
        if not sep or not path.strip():
            raise ValidationError(
                f"option `registry-ca` expects host=/path/ca.pem pairs, got `{pair}`"
            )
        path = os.path.abspath(os.path.expanduser(path.strip()))
        if not os.path.isfile(path):
            raise ValidationError(
                f"option `registry-ca`: CA file `{path}` does not exist",
                hint="fix the path with `envd context update`; nothing was created",
            )
        found.setdefault(_host(host, "option `registry-ca`"), RegistrySettings()).files["ca"] = path
    return found


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string of printable text is a valid TOML basic string


def _user_registries(text: str, path: str) -> set[str]:
    import importlib

    try:  # Python >= 3.11; on 3.10 buildkitd itself reports a broken file
        tomllib: Any = importlib.import_module("tomllib")
    except ImportError:
        return set()

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ValidationError(f"option `config`: `{path}` is not valid TOML: {exc}") from None
    section = data.get("registry", {})
    return set(section) if isinstance(section, dict) else set()


def render_config(options: Mapping[str, str]) -> tuple[str, dict[str, bytes]]:
    """The buildkitd.toml to run with and the certificate files it refers to."""
    regs = registries(options)
    lines = ["# Generated by envd (builder docker-container); recreated on bootstrap --force."]
    user_path = options.get("config")
    if user_path:
        user_text = _read(user_path, "option `config`").decode("utf-8", "replace")
        clash = sorted(_user_registries(user_text, user_path) & set(regs))
        if clash:
            raise ValidationError(
                f"option `config`: `{user_path}` already configures registry `{clash[0]}`, "
                "which the registry options also set",
                hint="configure each registry in one place",
            )
        lines += [f"# From {user_path}:", user_text.rstrip(), ""]
    files: dict[str, bytes] = {}
    for host in sorted(regs):
        reg = regs[host]
        key = _toml_str(host)
        lines.append(f"[registry.{key}]")
        if reg.mirrors:
            lines.append(f"  mirrors = [{', '.join(_toml_str(m) for m in reg.mirrors)}]")
        if reg.http:
            lines.append("  http = true")
        if reg.insecure:
            lines.append("  insecure = true")
        slug = re.sub(r"[^A-Za-z0-9.-]", "_", host)
        inside = {k: f"{CONFIG_DIR}/certs/{slug}/{k}.pem" for k in reg.files}
        for kind, path in reg.files.items():
            files[inside[kind]] = _read(path, f"{kind} file of registry `{host}`")
        if "ca" in inside:
            lines.append(f"  ca = [{_toml_str(inside['ca'])}]")
        if "cert" in inside and "key" in inside:
            lines += [f"  [[registry.{key}.keypair]]",
                      f"    key = {_toml_str(inside['key'])}",
                      f"    cert = {_toml_str(inside['cert'])}"]
    return "\n".join(lines) + "\n", files


def parse_flags(value: str | None) -> tuple[str, ...]:
    """Extra buildkitd flags (shell words). ``--config`` is envd's; an extra ``--addr`` is fine
    (buildkitd listens on every one given, e.g. also on TCP)."""
    try:
        words = tuple(shlex.split(value or ""))
    except ValueError as exc:
        raise ValidationError(f"option `buildkitd-flags`: {exc}") from None
    for word in words:
        if word.split("=", 1)[0] == "--config":
            raise ValidationError(
                f"option `buildkitd-flags` must not set `{word.split('=', 1)[0]}`: envd sets it",
                hint="put daemon settings in the file given with --builder-opt config=",
            )
    return words


def volume_name(container: str, option: str | None) -> str | None:
    """The cache volume: ``auto`` -> ``<container>_state``; ``none`` -> no volume."""
    value = (option or "auto").strip()
    if value == "none":
        return None
    if value == "auto":
        return f"{container}_state"
    if not re.match(r"^[A-Za-z0-9][A-Za-z0-9_.-]+$", value):
        raise ValidationError(
            f"option `cache-volume`: `{value}` is not a Docker volume name",
            hint="use letters, digits, `_`, `.` and `-`, or `auto` / `none`",
        )
    return value


def daemon_spec(container: str, options: Mapping[str, str], *, default_image: str) -> DaemonSpec:
    """Read every option (and the files they name) into the spec of the container to run."""
    toml, files = render_config(options)
    files = {CONFIG_FILE: toml.encode(), **files}
    network = (options.get("network") or "").strip() or None
    return DaemonSpec(
        image=(options.get("image") or default_image).strip(),
        network=network,
        volume=volume_name(container, options.get("cache-volume")),
        security=options.get("security") or "auto",
        flags=parse_flags(options.get("buildkitd-flags")),
        config_toml=toml,
        files=files,
    )
