"""The build graph: what a `build.envd` asks for, before any BuildKit detail.

Evaluating a build file fills one mutable :class:`BuildGraph`; the compiler turns it into LLB and
an OCI image config. The graph is plain data (attrs), so it can be compared, dumped to JSON and
hashed: :meth:`BuildGraph.digest` is stable across runs and Python versions because it hashes a
canonical JSON rendering, never ``repr`` or ``hash()``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import attrs

#: Upstream's default base image when `base()` is not called or has no `image`.
DEFAULT_IMAGE = "ubuntu:22.04"
#: Ports upstream envd opens in every dev container.
SSH_PORT = 2222
JUPYTER_PORT = 8888
RSTUDIO_PORT = 8787


@attrs.define
class Language:
    """A language runtime to install (`install.python`, `install.rust`, ...)."""

    name: str
    version: str | None = None


@attrs.define
class PipIndex:
    """`config.pip_index`: the index pip uses while building."""

    url: str
    extra_url: str = ""
    trust: bool = False


@attrs.define
class CondaConfig:
    """`install.conda` plus `install.conda_packages` / `config.conda_channel`."""

    use_mamba: bool = False
    packages: list[str] = attrs.field(factory=list)
    channels: list[str] = attrs.field(factory=list)
    channel_config: str | None = None
    env_file: str = ""


@attrs.define
class GitConfig:
    """`git_config(name, email, editor)`."""

    name: str = ""
    email: str = ""
    editor: str = ""


@attrs.define
class RunStep:
    """One `run(commands, mount_host)` call: a shell script run at build time."""

    commands: list[str]
    mount_host: bool = False


@attrs.define
class CopyInfo:
    """`io.copy(source, target, image)`: from the build context, or from another image."""

    source: str
    target: str
    image: str = ""


@attrs.define
class HttpInfo:
    """`io.http(url, checksum, filename)`: a download placed in the image."""

    url: str
    checksum: str = ""
    filename: str = ""


@attrs.define
class MountInfo:
    """`runtime.mount(host_path, envd_path)`: a bind mount at run time (not at build time)."""

    source: str
    destination: str


@attrs.define
class ExposeItem:
    """`runtime.expose(envd_port, host_port, service, listen_addr)`."""

    envd_port: int
    host_port: int = 0
    service: str = ""
    listen_addr: str = ""


@attrs.define
class JupyterConfig:
    """`config.jupyter(token, port)`."""

    token: str = ""
    port: int = JUPYTER_PORT


@attrs.define
class RepoInfo:
    """`config.repo(url, description)`; serialised into the repo label."""

    url: str = ""
    description: str = ""


@attrs.define
class RuntimeGraph:
    """What happens when the environment runs (upstream keeps it in its own image label)."""

    commands: dict[str, str] = attrs.field(factory=dict)
    daemon: list[list[str]] = attrs.field(factory=list)
    init: list[list[str]] = attrs.field(factory=list)
    environ: dict[str, str] = attrs.field(factory=dict)
    env_paths: list[str] = attrs.field(factory=list)
    expose: list[ExposeItem] = attrs.field(factory=list)
    mounts: list[MountInfo] = attrs.field(factory=list)


@attrs.define
class BuildGraph:
    """Everything one `build.envd` entry function asked for, in call order where order matters.

    Vendor functions (see :func:`envd_core.envdfile.lang.evaluate`) receive this object and may
    change any field; ``extensions`` is a free-form, JSON-serialisable place for their own data.
    """

    image: str = DEFAULT_IMAGE
    image_set: bool = False
    dev: bool = False
    shell: str = "bash"
    languages: list[Language] = attrs.field(factory=list)
    apt_packages: list[str] = attrs.field(factory=list)
    apt_sources: list[str] = attrs.field(factory=list)
    #: One inner list per `install.python_packages(name=...)` call (upstream's PyPIPackages).
    python_packages: list[list[str]] = attrs.field(factory=list)
    requirements_files: list[str] = attrs.field(factory=list)
    local_wheels: list[str] = attrs.field(factory=list)
    pip_index: PipIndex | None = None
    uv_python: str | None = None
    conda: CondaConfig | None = None
    cuda: str | None = None
    cudnn: str = ""
    r_packages: list[str] = attrs.field(factory=list)
    #: One inner list per `install.julia_packages(name=...)` call (upstream's JuliaPackages).
    julia_packages: list[list[str]] = attrs.field(factory=list)
    vscode_extensions: list[str] = attrs.field(factory=list)
    cran_mirror: str = ""
    julia_pkg_server: str = ""
    run_steps: list[RunStep] = attrs.field(factory=list)
    git: GitConfig | None = None
    copies: list[CopyInfo] = attrs.field(factory=list)
    downloads: list[HttpInfo] = attrs.field(factory=list)
    entrypoint: list[str] = attrs.field(factory=list)
    jupyter: JupyterConfig | None = None
    rstudio_server: bool = False
    gpu_count: int = 0
    shm_size: int = 0
    owner_uid: int | None = None
    owner_gid: int | None = None
    repo: RepoInfo = attrs.field(factory=RepoInfo)
    working_dir: str = ""
    user: str = ""
    labels: dict[str, str] = attrs.field(factory=dict)
    runtime: RuntimeGraph = attrs.field(factory=RuntimeGraph)
    extensions: dict[str, Any] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (nested attrs classes become dicts)."""
        return attrs.asdict(self, recurse=True)

    def to_json(self) -> str:
        """Canonical JSON: sorted keys, no whitespace; the input of :meth:`digest`."""
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"), default=str)

    def digest(self) -> str:
        """A stable ``sha256:<hex>`` of the graph (the `ai.tensorchord.envd.build.digest` label)."""
        return "sha256:" + hashlib.sha256(self.to_json().encode()).hexdigest()

    def python_commands(self) -> list[str]:
        """All requested PyPI packages flattened in call order (upstream's pypi label)."""
        return [pkg for call in self.python_packages for pkg in call]

    def language(self, name: str) -> Language | None:
        """The requested language named ``name``, if any."""
        for lang in self.languages:
            if lang.name == name:
                return lang
        return None

    def set_language(self, name: str, version: str | None) -> None:
        """Request ``name`` at ``version``; a second call for the same language replaces it."""
        existing = self.language(name)
        if existing is None:
            self.languages.append(Language(name, version))
        else:
            existing.version = version

    def wants_python(self) -> bool:
        """True when the image needs a Python/pip toolchain at build time."""
        return bool(
            self.language("python") or self.python_packages or self.requirements_files
            or self.local_wheels or self.jupyter
        )
