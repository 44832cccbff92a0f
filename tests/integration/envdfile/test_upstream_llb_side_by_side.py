"""Side by side with upstream envd v1.3.4: every file of ``upstream_corpus/`` compiled by both.

Upstream's side is ``envd debug llb`` (the infra's binary), run with its base-image lookups
answered from the local registry (:mod:`registry_stub`); ours is :func:`compile_graph`. Both are
reduced to :class:`llb_summary.Summary` (base image, apt packages, Python installer, ordered pip
steps and their arguments, conda, ``run()`` and Julia commands, copies, the env steps see)
and compared field by field. Every field where ours differs must be listed in ``DIFFERENCES``
with its reason (docs/build-language.md repeats the list), so a new disagreement fails here and
a fixed one fails until the list is updated. Labels and the entrypoint are not in upstream's
LLB dump; tests/integration/pipeline/test_envd_build_upstream_compat.py compares those on real
builds.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from git_server import git_daemon, make_repo
from llb_summary import Summary, our_ops, summarise, upstream_ops
from registry_stub import registry_proxy

from envd_core.envdfile import load_build
from envd_core.envdfile.compile import CompileOptions, compile_graph
from envd_core.envdfile.errors import UnsupportedBuildError

CORPUS = Path(__file__).with_name("upstream_corpus")
NAMES = sorted(p.name for p in CORPUS.iterdir() if (p / "build.envd").is_file())
STUB_PREFIX = "envd-stub"
#: Docker Hub base images upstream reads the config of (the CUDA swap, the default image).
#: A stand-in (the infra's Debian) is pushed under each name; only its config is read.
STUBS = [
    "library/ubuntu:22.04",
    "library/ubuntu:20.04",
    "nvidia/cuda:12.2.0-cudnn8-runtime-ubuntu22.04",
    "nvidia/cuda:12.2.0-cudnn8-devel-ubuntu22.04",
    "nvidia/cuda:11.8.0-cudnn8-runtime-ubuntu20.04",
]
DEV_SETUP = ("dev images: upstream adds its dev tooling (built-in apt packages, envd-sshd, "
             "horust, starship, the envd user); ours builds no dev tooling yet")

#: The repository ``include_git`` includes (served by a real git daemon, upstream clones it with
#: go-git, ours with git): two files, a private name, a load() between siblings.
ENVDLIB = {
    "tensorboard.envd": (
        "def tensorboard(host_port=6006):\n"
        '    install.python_packages(name=["tensorboard"])\n'
        '    runtime.daemon(commands=[["tensorboard", "--logdir", "/tmp", "--port", "6006"]])\n'
        '    runtime.expose(envd_port=6006, host_port=host_port, service="tensorboard")\n'),
    "tools/tools.envd": (
        "_PKGS = [\"curl\", \"jq\"]\n\n"
        "def tools():\n"
        "    install.apt_packages(name=_PKGS)\n"),
}

PYTHON_IN_IMAGE = {
    "python": "the image ships the requested Python: ours uses it in a venv; upstream "
              "installs the same version again with micromamba",
    "copies": "no micromamba copied in, for the same reason",
}

#: corpus file -> {field: why ours differs}. Fields not named here must be equal.
DIFFERENCES: dict[str, dict[str, str]] = {
    "cuda_dev": {"apt": DEV_SETUP, "copies": DEV_SETUP,
                 "env": DEV_SETUP + " (ours has no step to carry an env)"},
    "dev_editor": {"apt": DEV_SETUP + "; git_config is written as /etc/gitconfig with git "
                          "installed, upstream configures git for the dev user only",
                   "copies": DEV_SETUP},
    "languages": {
        "apt": "ours installs Go, Rust and Node.js from the distribution (versions not "
               "honoured, with a warning); upstream downloads release tarballs",
        "copies": "upstream copies the Go/Rust/Node.js/uv downloads in; ours uses apt and pip",
        "pip": "install.uv: ours pip-installs uv; upstream copies the uv binary from its image",
    },
    "conda_miniconda": {
        "copies": "ours lets BuildKit download the checksum-pinned Miniconda installer (an "
                  "https source); upstream downloads the same file in a curl container",
    },
    "julia_pixi": {
        "copies": "ours lets BuildKit download the checksum-pinned Julia archive (an https "
                  "source); upstream downloads the same file in a curl container",
    },
    "python_in_image": PYTHON_IN_IMAGE,
    # the included functions agree (pip, apt); only the base image's Python differs, as above
    "include_git": PYTHON_IN_IMAGE,
}
#: corpus file -> why ours refuses to compile it (upstream compiles it). Empty: ours refuses no
#: upstream function.
REFUSED: dict[str, str] = {}


@pytest.fixture(scope="module")
def include_git(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The ``git://`` URL of ENVDLIB, served for the whole module."""
    served = make_repo(tmp_path_factory.mktemp("envdlib"), "envdlib", ENVDLIB)
    with git_daemon(served) as (base, _):
        yield f"{base}/envdlib.git"


@pytest.fixture(autouse=True)
def _include_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVD_INCLUDE_CACHE", str(tmp_path / "include-cache"))


@pytest.fixture(scope="module")
def upstream_llb(upstream_envd: str, registry: str, docker_host: str, include_git: str,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """``envd debug llb`` output of every corpus file (file name -> JSON lines)."""
    if shutil.which("docker") is None:
        pytest.skip("the docker CLI is needed to push the stand-in base images")
    denv = dict(os.environ, DOCKER_HOST=docker_host)

    def docker(*args: str) -> None:
        subprocess.run(["docker", *args], env=denv, check=True, capture_output=True,
                       timeout=300)

    standin = f"{registry}/debian:bookworm"
    docker("pull", "-q", standin)
    for name in STUBS:
        docker("tag", standin, f"{registry}/{STUB_PREFIX}/{name}")
        docker("push", "-q", f"{registry}/{STUB_PREFIX}/{name}")
    root = tmp_path_factory.mktemp("upstream")
    home = root / "home"
    (home / ".config" / "containers").mkdir(parents=True)
    # docker.io marked insecure: upstream then speaks plain HTTP, through the proxy below
    (home / ".config" / "containers" / "registries.conf").write_text(
        f'[[registry]]\nlocation = "{registry}"\ninsecure = true\n\n'
        f'[[registry]]\nprefix = "docker.io"\nlocation = "{registry}/{STUB_PREFIX}"\n'
        "insecure = true\n")
    out: dict[str, str] = {}
    with registry_proxy(registry, STUB_PREFIX) as proxy:
        env = {**os.environ, "HOME": str(home), "ENVD_ANALYTICS": "false",
               "HTTP_PROXY": proxy, "NO_PROXY": "127.0.0.1,localhost"}
        for name in NAMES:
            context = _context(root / name, name, registry, include_git)
            proc = subprocess.run([upstream_envd, "debug", "llb"], cwd=context, env=env,
                                  capture_output=True, text=True, timeout=300, check=False)
            assert proc.returncode == 0, f"upstream: {name}: {proc.stderr[-1500:]}"
            out[name] = proc.stdout
    yield out


def _context(dest: Path, name: str, registry: str, include_git: str) -> Path:
    """A copy of corpus entry ``name`` with ``@REGISTRY@`` and ``@INCLUDE_GIT@`` filled in."""
    if not dest.exists():
        shutil.copytree(CORPUS / name, dest)
        for path in dest.rglob("*.envd"):
            text = path.read_text().replace("@REGISTRY@", registry)
            path.write_text(text.replace("@INCLUDE_GIT@", include_git))
    return dest


def _differences(ours: Summary, theirs: Summary) -> dict[str, Any]:
    mine, other = ours.as_dict(), theirs.as_dict()
    return {k: {"ours": mine[k], "upstream": other[k]} for k in mine if mine[k] != other[k]}


@pytest.mark.parametrize("name", NAMES)
def test_side_by_side_with_upstream(name: str, upstream_llb: dict[str, str], registry: str,
                                    include_git: str, tmp_path: Path) -> None:
    context = _context(tmp_path / name, name, registry, include_git)
    graph = load_build(context, check_buildable=False)
    declared = [*sorted(graph.runtime.environ), "LANG", "LC_ALL", "DEBIAN_FRONTEND"]
    theirs = summarise(upstream_ops(upstream_llb[name]), declared_env=declared)
    try:
        compiled = compile_graph(graph, options=CompileOptions(context_dir=context))
    except UnsupportedBuildError as exc:
        assert name in REFUSED, f"ours refuses {name} and REFUSED does not say why: {exc}"
        return
    assert name not in REFUSED, f"{name} compiles now: drop it from REFUSED (and the docs)"
    ours = summarise(our_ops(compiled.definition), declared_env=declared, context=context)
    differ = _differences(ours, theirs)
    expected = DIFFERENCES.get(name, {})
    assert set(differ) == set(expected), (
        f"{name}: fields that differ {sorted(differ)} != documented {sorted(expected)}\n"
        + "\n".join(f"  {k}: {v}" for k, v in differ.items()))


def test_the_corpus_covers_the_functions_of_upstreams_reference() -> None:
    """Every function of reference §10 that upstream can compile offline appears somewhere."""
    text = "\n".join(p.read_text() for p in CORPUS.rglob("*.envd"))
    functions = [
        "base(", "shell(", "run(", "git_config(", "install.python(", "install.conda(",
        "install.uv(", "install.pixi(", "install.r_lang(", "install.julia(", "install.rust(",
        "install.go(", "install.nodejs(", "install.apt_packages(", "install.python_packages(",
        "install.conda_packages(", "install.r_packages(", "install.julia_packages(",
        "install.cuda(", "install.codex(", "config.apt_source(", "config.pip_index(",
        "config.conda_channel(", "config.cran_mirror(", "config.jupyter(",
        "config.rstudio_server(", "config.gpu(", "config.shm_size(", "config.entrypoint(",
        "config.repo(", "config.owner(", "config.julia_pkg_server(", "io.copy(", "io.http(",
        "runtime.command(", "runtime.daemon(",
        "runtime.expose(", "runtime.environ(", "runtime.mount(", "runtime.init(", "data.envd(",
        "data.path.huggingface", "load(", "include(",
    ]
    missing = [f for f in functions if f not in text]
    assert missing == [], missing
