"""``install.vscode_extensions``: VS Code extensions placed in dev images, as upstream does.

Upstream envd v1.3.4 (``pkg/lang/ir/v1/editor.go``, ``pkg/editor/vscode``), for dev images only:
while compiling, on the host, it asks Open VSX for each extension's download
(``GET https://open-vsx.org/api/<publisher>/<name>/latest?targetPlatform=linux-x64``, JSON
``downloads.universal`` or ``downloads[<platform>]``), downloads the ``.vsix``, unzips it into
its cache directory once (later builds reuse it), and copies the ``extension/`` folder from that
directory (a local source) to ``/home/envd/.vscode-server/extensions/<publisher>.<name>[-<v>]``.
A version in the name (``ms-python.python-2024.1.0``) only changes the folder name there: Open
VSX's latest is downloaded either way. Non-dev images get nothing.

Ours does the same, with:

- the gallery configurable: ``$ENVD_VSCODE_GALLERY`` (an Open VSX-compatible base URL, default
  ``https://open-vsx.org``), for mirrors and for machines that cannot reach Open VSX;
- a version in the name honoured (``/api/<publisher>/<name>/<version>``), not only the folder;
- the cache under ``$XDG_CACHE_HOME/envd/vscode-extensions`` (``$ENVD_VSCODE_CACHE``), each
  extension unpacked to a temporary folder and renamed, so a failed download leaves nothing;
- one-line errors naming the extension and the URL; a non-dev image gets a warning (upstream
  ignores the call silently).

The HTTP client is the standard library's ``urllib``: two GETs per extension need no package.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

import attrs

from envd_core.errors import BuildError

if TYPE_CHECKING:
    import zipfile

    from envd_core.buildkit import llb as llb_mod
    from envd_core.envdfile.compile import _Compiler

DEFAULT_GALLERY = "https://open-vsx.org"
LOCAL_NAME = "vscode-extensions"
TARGET_DIR = "/home/envd/.vscode-server/extensions"
TIMEOUT = 60.0
_PLATFORMS = {"amd64": "linux-x64", "arm64": "linux-arm64", "arm": "linux-armhf"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][\w-]*$")


@attrs.frozen
class Extension:
    """``publisher.name[-version]`` as upstream parses it (a version starts with a digit)."""

    publisher: str
    name: str
    version: str = ""

    @classmethod
    def parse(cls, spec: str) -> Extension:
        publisher, dot, rest = spec.partition(".")
        if not dot or not publisher or not rest:
            raise BuildError(f"VS Code extension `{spec}` must look like `publisher.name`")
        name, version = rest, ""
        head, dash, tail = rest.rpartition("-")
        if dash and head and tail[:1].isdigit():
            name, version = head, tail
        for part in (publisher, name):
            if not _NAME_RE.match(part):
                raise BuildError(f"VS Code extension `{spec}` has an invalid part `{part}`")
        return cls(publisher, name, version)

    def folder(self) -> str:
        """The folder name in the image (upstream's ``<publisher>.<name>[-<version>]``)."""
        base = f"{self.publisher}.{self.name}"
        return f"{base}-{self.version}" if self.version else base


def gallery() -> str:
    """The Open VSX-compatible base URL extensions come from."""
    return (os.environ.get("ENVD_VSCODE_GALLERY") or DEFAULT_GALLERY).rstrip("/")


def cache_dir() -> Path:
    """Where unpacked extensions are kept between builds."""
    override = os.environ.get("ENVD_VSCODE_CACHE")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "envd" / "vscode-extensions"


def target_platform(platform: str) -> str:
    """BuildKit ``linux/amd64`` → VS Code's ``linux-x64``."""
    arch = platform.split("/")[1] if "/" in platform else platform
    if arch not in _PLATFORMS:
        raise BuildError(f"VS Code extensions are not published for the platform `{platform}`")
    return _PLATFORMS[arch]


def fetch(ext: Extension, platform: str, *, root: Path | None = None,
          base_url: str | None = None) -> str:
    """Download and unpack ``ext`` once; return its folder name relative to the cache root.

    The folder holds ``extension/`` (the unpacked extension) like upstream's cache.
    """
    root = root or cache_dir()
    vsx_platform = target_platform(platform)
    key = f"{ext.folder()}@{vsx_platform}"
    if (root / key / "extension").is_dir():
        return key
    base = (base_url or gallery()).rstrip("/")
    api = f"{base}/api/{ext.publisher}/{ext.name}/{ext.version or 'latest'}"
    meta = json.loads(_get(f"{api}?targetPlatform={vsx_platform}", ext).decode())
    downloads = meta.get("downloads") or {}
    url = downloads.get("universal") or downloads.get(vsx_platform) or (
        meta.get("files") or {}).get("download")
    if not url:
        raise BuildError(
            f"VS Code extension `{ext.folder()}` has no download for `{vsx_platform}` at "
            f"`{api}`; pick another extension or version")
    # the download's modules (urllib pulls in http.client and email) load only here: every
    # build compiles this module, few install an extension that is not cached yet
    import shutil
    import tempfile
    import zipfile

    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
    try:
        vsix = tmp / "extension.vsix"
        vsix.write_bytes(_get(url, ext))
        try:
            with zipfile.ZipFile(vsix) as archive:
                _safe_extract(archive, tmp / "unpacked")
        except zipfile.BadZipFile:
            raise BuildError(
                f"VS Code extension `{ext.folder()}` from `{url}` is not a .vsix (zip) file"
            ) from None
        if not (tmp / "unpacked" / "extension").is_dir():
            raise BuildError(
                f"VS Code extension `{ext.folder()}` from `{url}` has no `extension/` folder")
        os.replace(tmp / "unpacked", tmp / key)
        try:
            os.rename(tmp / key, root / key)
        except OSError:
            if not (root / key / "extension").is_dir():  # not a concurrent build's copy
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return key


def _get(url: str, ext: Extension) -> bytes:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            data: bytes = resp.read()
            return data
    except urllib.error.HTTPError as exc:
        hint = "; check the extension's name" if exc.code == 404 else ""
        raise BuildError(
            f"VS Code extension `{ext.folder()}`: `{url}` answered HTTP {exc.code}{hint}"
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise BuildError(
            f"VS Code extension `{ext.folder()}`: cannot download `{url}` ({reason}); set "
            "ENVD_VSCODE_GALLERY to a reachable Open VSX mirror") from None


def _safe_extract(archive: zipfile.ZipFile, dest: Path) -> None:
    """Extract, refusing members that would land outside ``dest`` (zip-slip)."""
    dest = dest.resolve()
    for member in archive.infolist():
        target = (dest / member.filename).resolve()
        if target != dest and dest not in target.parents:
            raise BuildError(f"the .vsix member `{member.filename}` points outside its folder")
    archive.extractall(dest)


def install_vscode(c: _Compiler, st: llb_mod.State) -> llb_mod.State:
    """Copy each extension into the dev image (dev images only, as upstream)."""
    g = c.graph
    if not g.vscode_extensions:
        return st
    if not g.dev:
        c.warnings.append(
            "install.vscode_extensions: extensions go into dev images only (base(dev=True)); "
            "nothing is installed, as upstream")
        return st
    extensions = [Extension.parse(spec) for spec in g.vscode_extensions]
    root = cache_dir()
    keys = [fetch(ext, c.platform, root=root) for ext in extensions]
    source = c.llb.local(LOCAL_NAME, include=[f"{k}/extension" for k in keys],
                         shared_key_hint=LOCAL_NAME)
    c.extra_locals[LOCAL_NAME] = str(root)
    owner = None
    if g.owner_uid is not None:
        owner = f"{g.owner_uid}:{g.owner_gid if g.owner_gid is not None else g.owner_uid}"
    for ext, key in zip(extensions, keys, strict=True):
        st = st.copy(source, f"/{key}/extension/", f"{TARGET_DIR}/{ext.folder()}", owner=owner)
    return st
