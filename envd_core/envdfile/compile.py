"""Compile a :class:`BuildGraph` into an LLB definition and an OCI image config.

The chain of steps (each a BuildKit vertex, so each is cached on its own):

1. base image (with ``install.cuda``: ``docker.io/nvidia/cuda:<v>-cudnn<n>-<runtime|devel>-<image>``
   as upstream picks it)
2. ``config.apt_source`` → ``/etc/apt/sources.list``
3. apt: every system package in one ``apt-get install`` with locked cache mounts on
   ``/var/cache/apt`` and ``/var/lib/apt`` (nothing of them lands in the image)
4. Python (:mod:`~envd_core.envdfile.pysteps`, :mod:`~envd_core.envdfile.condasteps`): the
   requested version with conda or micromamba as upstream, or the image's own in a venv at
   ``/opt/envd/venv`` when it is that version; one pip step per ``python_packages`` call,
   requirements files, local wheels; then conda packages
5. Julia, pixi, R packages, Julia packages (:mod:`~envd_core.envdfile.releases`)
6. ``io.http``, ``io.copy``, codex, git config, then ``run()`` steps in call order

Every step sees upstream's base environment and ``runtime.environ``. docs/build-language.md
lists where the result differs from upstream's and why.

Network steps get the proxy variables and, with ``ca_bundle_secret``, the extra CA bundle as a
SECRET mount (id ``envd-ca-bundle``) plus ``PIP_CERT``/``REQUESTS_CA_BUNDLE``/``SSL_CERT_FILE``:
the CA is visible during that step only and never written into the image.
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from envd_core.envdfile.buildflags import DEFAULT_PLATFORM, environment_name
from envd_core.envdfile.errors import UnsupportedBuildError
from envd_core.envdfile.graph import DEFAULT_IMAGE, BuildGraph
from envd_core.envdfile.image_config import DEFAULT_PATH, image_config
from envd_core.envdfile.pysteps import (
    PythonInstaller,
    install_python,
    pip_steps,
    uses_micromamba,
)
from envd_core.envdfile.releases import (
    install_agents,
    install_julia,
    install_pixi,
    julia_packages,
)
from envd_core.envdfile.vscode import install_vscode

if TYPE_CHECKING:
    from envd_core.buildkit import llb as llb_mod
    from envd_core.buildkit._pb import ops_pb2

CONTEXT_NAME = "build-context"
CA_SECRET_ID = "envd-ca-bundle"
CA_PATH = "/etc/ssl/certs/ca-certificates.crt"
#: apt gets the CA elsewhere: installing `ca-certificates` rewrites CA_PATH, which must not be a
#: read-only mount at that moment.
APT_CA_PATH = "/run/envd/apt-ca-bundle.crt"
#: Where io.http files land: upstream's extra-source dir (``/home/envd/extra_source``).
DOWNLOAD_DIR = "/home/envd/extra_source"
CONTEXT_MOUNT = "/run/envd/context"

#: Languages installable from the distribution (the version argument is not honoured).
APT_LANGUAGES = {
    "python": ["python3", "python3-venv"],
    "go": ["golang-go"],
    "rust": ["rustc", "cargo"],
    "nodejs": ["nodejs", "npm"],
    "r": ["r-base"],
}
#: `run()` steps: bash like upstream when the image has it, POSIX sh otherwise ($1 = script).
RUN_WRAPPER = [
    "/bin/sh", "-c",
    'if [ -x /bin/bash ]; then exec /bin/bash -euo pipefail -c "$1"; fi; set -eu; eval "$1"',
    "envd-run",
]
SHELL_PACKAGES = {"zsh": ["zsh"], "fish": ["fish"], "bash": [], "sh": []}


@attrs.define
class CompileOptions:
    """How to compile: where the context is, for which platform, and which side-channels."""

    context_dir: Path = attrs.field(factory=lambda: Path("."), converter=Path)
    tag: str = ""
    platform: str | None = None
    #: Mount the extra CA bundle (session secret `envd-ca-bundle`) into network steps.
    ca_bundle_secret: bool = False
    #: Reserved: the chain is linear (like upstream with DisableMergeOp), merge is not used.
    merge_op: bool = False
    no_cache: bool = False
    #: HTTP(S)_PROXY/NO_PROXY for network steps only (never in the image config).
    proxy_env: Mapping[str, str] = attrs.field(factory=dict)
    #: Exec network mode for steps that download: "sandbox" (daemon default) or "host".
    network: str = "sandbox"
    #: Where install.python(version) gets a Python the image lacks (upstream's micromamba).
    python_installer: PythonInstaller = attrs.field(factory=PythonInstaller)


@attrs.define
class CompiledBuild:
    """The result of :func:`compile_graph`.

    ``definition`` is a ``pb.Definition`` (``SerializeToString()`` is what ``buildctl build``
    reads on stdin); ``local_dirs`` maps local source names to host directories for the
    session's FileSync; ``secrets_needed`` lists secret ids the session must serve.
    """

    state: Any
    definition: ops_pb2.Definition
    image_config: dict[str, Any]
    local_dirs: dict[str, str]
    secrets_needed: list[str]
    entitlements: list[str]
    shared_key: str
    platform: str
    #: Graph features left out on purpose, one line each, for the CLI to show.
    warnings: list[str] = attrs.field(factory=list)

    def dump_llb(self) -> bytes:
        """The serialized Definition (``--dump-llb``)."""
        return self.definition.SerializeToString()


class _Compiler:
    def __init__(self, graph: BuildGraph, opts: CompileOptions) -> None:
        from envd_core.buildkit import llb

        self.llb = llb
        self.graph = graph
        self.opts = opts
        self.platform = opts.platform or DEFAULT_PLATFORM
        self.context_used = False
        self.path_prefix: list[str] = []
        self.image_env: dict[str, str] = {}
        # Every step sees upstream's base environment and the declared runtime.environ, as in
        # upstream (compileBaseImage adds both to the base state); PATH is the compiler's.
        self.env: dict[str, str] = {
            "DEBIAN_FRONTEND": "noninteractive", "PATH": ":".join(DEFAULT_PATH),
            "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
            **{k: v for k, v in graph.runtime.environ.items() if k != "PATH"},
        }
        self.image_ref = graph.image
        #: Local sources besides the build context (name -> host directory).
        self.extra_locals: dict[str, str] = {}
        #: Things built differently from what the file says, one line each (like upstream's).
        self.warnings: list[str] = []

    # -- helpers ---------------------------------------------------------------------------
    def context(self, include: list[str] | None = None) -> llb_mod.State:
        """The build context as a local source (only ``include`` paths when given)."""
        self.context_used = True
        return self.llb.local(
            CONTEXT_NAME,
            include=include or (),
            shared_key_hint=CONTEXT_NAME,
        )

    def network_extras(self, ca_path: str = CA_PATH) -> tuple[dict[str, str], list[Any]]:
        """Env and mounts every step that talks to the network gets."""
        env = dict(self.opts.proxy_env)
        mounts: list[Any] = []
        if self.opts.ca_bundle_secret:
            mounts.append(self.llb.secret(ca_path, CA_SECRET_ID, mode=0o444))
            env.update({"PIP_CERT": ca_path, "REQUESTS_CA_BUNDLE": ca_path,
                        "SSL_CERT_FILE": ca_path, "CURL_CA_BUNDLE": ca_path,
                        "NODE_EXTRA_CA_CERTS": ca_path})
        return env, mounts

    def run(self, state: llb_mod.State, script: str, *, name: str, network: bool = False,
            env: Mapping[str, str] | None = None, mounts: list[Any] | None = None,
            ca_path: str = CA_PATH, argv: list[str] | None = None,
            cwd: str | None = None) -> llb_mod.State:
        """Run ``script`` with ``/bin/sh -ec`` (or ``argv``); step env and mounts do not persist."""
        step_env = dict(env or {})
        step_mounts = list(mounts or [])
        net_mode = "sandbox"
        if network:
            extra_env, extra_mounts = self.network_extras(ca_path)
            step_env = {**extra_env, **step_env}
            step_mounts += extra_mounts
            net_mode = self.opts.network
        ex = state.run(argv or ["/bin/sh", "-ec", script], env=step_env, mounts=step_mounts,
                       network=net_mode, name=name, ignore_cache=self.opts.no_cache, cwd=cwd)
        # Keep the state's own env: step variables (CA paths, index URLs) stay in the step.
        return self.llb.State(output=ex.output, env=state.env, cwd=state.cwd, user=state.user,
                              platform=state.platform)

    # -- steps -----------------------------------------------------------------------------
    def base(self) -> llb_mod.State:
        g = self.graph
        ref = g.image
        if g.cuda is not None:
            # Upstream's GetCUDAImage: CUDA always replaces the base image (runtime flavour
            # unless dev), and says so when the file named another image.
            flavour = "devel" if g.dev else "runtime"
            ref = (f"docker.io/nvidia/cuda:{g.cuda}-cudnn{g.cudnn or '8'}-{flavour}-"
                   + g.image.replace(":", "", 1))
            if g.image != DEFAULT_IMAGE:
                self.warnings.append(
                    f"install.cuda(): CUDA is only tested with {DEFAULT_IMAGE}; the base image "
                    f"`{g.image}` is replaced by `{ref}`")
        self.image_ref = ref
        st = self.llb.image(ref, platform=self.platform)
        for key, value in self.env.items():
            st = st.with_env(key, value)
        return st

    def system_packages(self) -> list[str]:
        """Packages always installed with apt (Python is decided inside the step, see apt())."""
        g = self.graph
        pkgs: list[str] = []
        for lang in g.languages:
            if lang.name != "python":
                pkgs += APT_LANGUAGES.get(lang.name, [])
        if g.r_packages and not g.language("r"):
            pkgs += APT_LANGUAGES["r"]
        if g.git is not None:
            pkgs.append("git")
        pkgs += SHELL_PACKAGES.get(g.shell, [])
        pkgs += g.apt_packages
        return list(dict.fromkeys(pkgs))

    def apt(self, st: llb_mod.State) -> llb_mod.State:
        g = self.graph
        if g.apt_sources:
            st = st.mkfile("/etc/apt/sources.list", "\n".join(g.apt_sources) + "\n")
        pkgs = self.system_packages()
        # The venv needs python3 + venv from the distribution when the image lacks them;
        # micromamba brings its own Python.
        python = (g.wants_python() or g.uv_python is not None) and not uses_micromamba(
            g, self.image_ref)
        if not pkgs and not python:
            return st
        ca_opt = ""
        if self.opts.ca_bundle_secret:
            ca_opt = f" -o Acquire::https::CAInfo={APT_CA_PATH}"
        lines = [f"pkgs={shlex.quote(' '.join(pkgs))}"]
        if python:
            # Images with a complete Python (official python images) need nothing; Debian and
            # Ubuntu bases need python3 + python3-venv (ensurepip) for the venv step.
            lines.append(
                "if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then "
                'pkgs="$pkgs ' + " ".join(APT_LANGUAGES["python"]) + '"; fi'
            )
        lines += [
            'if [ -n "$pkgs" ]; then',
            # Debian images delete downloaded .debs after install; keep them in the cache mount.
            "rm -f /etc/apt/apt.conf.d/docker-clean",
            ("echo 'Binary::apt::APT::Keep-Downloaded-Packages \"true\";' "
             "> /etc/apt/apt.conf.d/keep-cache"),
            f"apt-get{ca_opt} update",
            (f"DEBIAN_FRONTEND=noninteractive apt-get{ca_opt} install -y "
             "--no-install-recommends $pkgs"),
            "fi",
        ]
        mounts = [
            self.llb.cache("/var/cache/apt", f"envd-apt-cache-{self.platform}", sharing="locked"),
            self.llb.cache("/var/lib/apt", f"envd-apt-lists-{self.platform}", sharing="locked"),
        ]
        shown = " ".join(pkgs + (["(python3 if missing)"] if python else []))
        return self.run(st, "\n".join(lines), name=f"apt-get install {shown}", network=True,
                        mounts=mounts, ca_path=APT_CA_PATH)

    def python(self, st: llb_mod.State) -> llb_mod.State:
        if not self.graph.wants_python() and self.graph.uv_python is None:
            return st
        st, python = install_python(self, st)
        st = pip_steps(self, st, python)
        if self.graph.conda is not None and self.graph.language("python") is not None:
            from envd_core.envdfile.condasteps import conda_packages

            # upstream's working dir: /home/envd/<build context directory name>
            st = conda_packages(self, st, f"/home/envd/{self.opts.context_dir.absolute().name}")
        return st

    def r_packages(self, st: llb_mod.State) -> llb_mod.State:
        g = self.graph
        if not g.r_packages:
            return st
        mirror = g.cran_mirror or "https://cloud.r-project.org"
        pkgs = ", ".join(f'"{p}"' for p in g.r_packages)
        script = f"Rscript -e {shlex.quote(f'install.packages(c({pkgs}), repos={mirror!r})')}"
        return self.run(st, script, name="install R packages", network=True)

    def files(self, st: llb_mod.State) -> llb_mod.State:
        """io.http downloads, then io.copy, in upstream's order; then the git config."""
        g = self.graph
        llb = self.llb
        for dl in g.downloads:
            # upstream copies the download's directory into the extra-source dir
            st = st.copy(_http_source(llb, dl.url, dl.checksum, dl.filename), "/", DOWNLOAD_DIR)
        for item in g.copies:
            source = llb.image(item.image, platform=self.platform) if item.image else \
                self.context(include=[item.source])
            st = st.copy(source, item.source, item.target)
        if g.git is not None:
            lines = ["[user]"]
            if g.git.name:
                lines.append(f"\tname = {g.git.name}")
            if g.git.email:
                lines.append(f"\temail = {g.git.email}")
            if g.git.editor:
                lines += ["[core]", f"\teditor = {g.git.editor}"]
            st = st.mkfile("/etc/gitconfig", "\n".join(lines) + "\n")
        return st

    def run_steps(self, st: llb_mod.State, wd: str) -> llb_mod.State:
        """User `run()` steps, like upstream: bash with ``set -euo pipefail`` in the working dir.

        Images without bash (busybox) fall back to ``sh`` with ``set -eu``. ``mount_host``
        bind-mounts the build context read-only at the working dir (or /run/envd/context).
        """
        cwd = wd or "/"
        for step in self.graph.run_steps:
            mounts: list[Any] = []
            if step.mount_host:
                target = wd or CONTEXT_MOUNT
                cwd = target
                mounts.append(self.llb.bind(target, self.context(), readonly=True))
            script = "\n".join(step.commands)
            st = self.run(st, script, name="run: " + "; ".join(step.commands), network=True,
                          mounts=mounts, argv=[*RUN_WRAPPER, script], cwd=cwd)
            cwd = wd or "/"
        return st

    def workdir(self, st: llb_mod.State, name: str) -> tuple[llb_mod.State, str]:
        """Dev images work in ``/home/envd/<name>`` (upstream's working dir)."""
        g = self.graph
        wd = g.working_dir or (f"/home/envd/{name}" if g.dev and name else "")
        if wd:
            st = st.mkdir(wd)
        return st, wd


def _http_source(llb: Any, url: str, checksum: str, filename: str) -> Any:
    """An ``https://`` source op (BuildKit downloads it; ``http.checksum`` pins it)."""
    return llb.http(url, filename=filename, checksum=checksum or None)


def check_supported(graph: BuildGraph) -> list[str]:
    """Refuse what cannot be built; return warnings for what is built differently.

    Build files meet these refusals at the call already (``evaluate(check_buildable=True)``,
    with the position); this catches graphs a vendor function or a graph-only evaluation made.
    Conda comes with ``install.python()`` only, as in upstream; alone it is a warning.
    """
    warnings: list[str] = []
    conda = graph.conda
    if conda is not None and graph.language("python") is None:
        if conda.packages or conda.env_file:
            raise UnsupportedBuildError(
                "install.conda_packages: conda is installed with install.python() (as "
                "upstream does it); add install.python() to the build function")
        warnings.append("install.conda(): without install.python() nothing is installed "
                        "(as upstream); add install.python() to get a conda environment")
    for lang in graph.languages:
        if lang.version and lang.name != "python":
            warnings.append(
                f"install.{lang.name}(version={lang.version!r}): the version is not enforced; "
                "the base image's or the distribution's package is used"
            )
    return warnings


def compile_graph(graph: BuildGraph, *, options: CompileOptions | None = None,
                  platform: str | None = None) -> CompiledBuild:
    """Turn ``graph`` into LLB and an image config (see the module docstring for the steps)."""
    opts = options or CompileOptions()
    if platform is not None:
        opts = attrs.evolve(opts, platform=platform)
    warnings = check_supported(graph)
    c = _Compiler(graph, opts)
    st = c.base()
    st = c.apt(st)
    st = c.python(st)
    # upstream: languages, then pip/conda/uv, pixi, R packages, Julia packages
    st = install_julia(c, st)
    st = install_pixi(c, st)
    st = c.r_packages(st)
    st = julia_packages(c, st)
    st = c.files(st)
    st = install_agents(c, st)
    st = install_vscode(c, st)
    name = environment_name(opts.context_dir)
    st, wd = c.workdir(st, name)
    st = c.run_steps(st, wd)
    definition = st.to_definition(c.platform)
    context = str(opts.context_dir.absolute())
    config = image_config(graph, platform=c.platform, environment_name=name,
                          path_prefix=c.path_prefix, working_dir=wd, extra_env=c.image_env,
                          context_dir=context)
    return CompiledBuild(
        state=st,
        definition=definition,
        image_config=config,
        local_dirs={**({CONTEXT_NAME: context} if c.context_used else {}), **c.extra_locals},
        secrets_needed=[CA_SECRET_ID] if opts.ca_bundle_secret else [],
        entitlements=["network.host"] if opts.network == "host" else [],
        shared_key="envd-" + hashlib.sha256(context.encode()).hexdigest()[:32],
        warnings=warnings + c.warnings,
        platform=c.platform,
    )
