"""install.conda / conda_packages / config.conda_channel compile to upstream v1.3.4's steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from envd_core.buildkit._pb import ops_pb2
from envd_core.envdfile.compile import CompileOptions, compile_graph
from envd_core.envdfile.errors import BuildFileError, UnsupportedBuildError
from envd_core.envdfile.lang import evaluate

IMAGE = 'base(image="127.0.0.1:5000/debian:bookworm")\n'


def _compile(tmp_path: Path, body: str):
    ctx = tmp_path / "proj"
    ctx.mkdir(exist_ok=True)
    (ctx / "build.envd").write_text(
        "def build():\n" + "".join(f"    {ln}\n" for ln in body.strip().splitlines()))
    g = evaluate(ctx / "build.envd", context_dir=ctx)
    return compile_graph(g, options=CompileOptions(context_dir=ctx))


def _ops(c) -> list[ops_pb2.Op]:
    return [ops_pb2.Op.FromString(b) for b in getattr(c.definition, "def")]


def _execs(c) -> list[ops_pb2.ExecOp]:
    return [o.exec for o in _ops(c) if o.WhichOneof("op") == "exec"]


def _files(c) -> dict[str, bytes]:
    return {a.mkfile.path: a.mkfile.data for o in _ops(c) if o.WhichOneof("op") == "file"
            for a in o.file.actions if a.WhichOneof("action") == "mkfile"}


def test_micromamba_conda_environment_and_packages(tmp_path: Path) -> None:
    c = _compile(tmp_path, IMAGE + '''
install.conda(use_mamba=True)
install.python(version="3.10")
install.python_packages(name=["six"])
install.conda_packages(name=["numpy", "scipy"], channel=["conda-forge"])
config.conda_channel(channel="channels:\\n  - conda-forge\\n")
''')
    argvs = [list(e.meta.args) for e in _execs(c)]
    assert argvs.index(["bash", "-c", "/opt/conda/bin/micromamba create -n envd python=3.10"]) \
        < argvs.index(["/opt/conda/envs/envd/bin/python", "-m", "pip", "install", "six"]) \
        < argvs.index(["/opt/conda/bin/micromamba", "install", "-n", "envd", "-c",
                       "conda-forge", "numpy", "scipy"])
    assert ["bash", "-c", "/opt/conda/bin/micromamba shell init --shell bash"] in argvs
    install = next(e for e in _execs(c) if e.meta.args[1:2] == ["install"])
    assert install.meta.cwd == "/home/envd/proj"
    assert {m.dest for m in install.mounts} >= {"/home/envd/proj", "/opt/conda/pkgs"}
    files = _files(c)
    assert files["/opt/conda/envs/envd/.condarc"] == b"channels:\n  - conda-forge\n"
    assert b"conda-forge" in files["/opt/conda/.mambarc"]
    env = dict(e.split("=", 1) for e in c.image_config["config"]["Env"])
    assert env["MAMBA_ROOT_PREFIX"] == env["MAMBA_TARGET_PREFIX"] == "/opt/conda"
    assert env["PATH"].startswith("/opt/conda/envs/envd/bin:/opt/conda/bin:")


def test_miniconda_is_a_checksum_pinned_download(tmp_path: Path) -> None:
    c = _compile(tmp_path, IMAGE + 'install.conda()\ninstall.python()\n'
                 'install.conda_packages(env_file="environment.yml")')
    sources = {o.source.identifier: dict(o.source.attrs) for o in _ops(c)
               if o.WhichOneof("op") == "source"}
    url = "https://repo.anaconda.com/miniconda/Miniconda3-py311_25.9.1-1-Linux-x86_64.sh"
    assert sources[url]["http.checksum"] == (
        "sha256:238abad23f8d4d8ba89dd05df0b0079e278909a36e06955f12bbef4aa94e6131")
    argvs = [list(e.meta.args) for e in _execs(c)]
    assert ["bash", "-c", "/opt/conda/bin/conda create -n envd python=3.11"] in argvs
    assert ["/opt/conda/bin/conda", "env", "update", "-n", "envd", "--file",
            "environment.yml"] in argvs


def test_conda_alone_installs_nothing_like_upstream(tmp_path: Path) -> None:
    c = _compile(tmp_path, IMAGE + "install.conda()")
    assert _execs(c) == []
    assert any("without install.python() nothing is installed" in w for w in c.warnings)
    with pytest.raises(UnsupportedBuildError):
        _compile(tmp_path, IMAGE + 'install.conda()\ninstall.conda_packages(name=["numpy"])')


@pytest.mark.parametrize("call", ['install.conda_packages(name=["numpy"])',
                                  'config.conda_channel(channel="x")'])
def test_conda_calls_without_install_conda_fail_at_their_position(tmp_path: Path,
                                                                  call: str) -> None:
    with pytest.raises(BuildFileError) as info:
        _compile(tmp_path, call)
    assert str(info.value).startswith(f"build.envd:2:5: `{call.split('(')[0]}` cannot")
