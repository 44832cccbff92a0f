"""install.python(version) and python_packages compile to upstream v1.3.4's Python steps."""

from __future__ import annotations

from pathlib import Path

import pytest

from envd_core.buildkit._pb import ops_pb2
from envd_core.envdfile.compile import CompileOptions, compile_graph
from envd_core.envdfile.lang import evaluate
from envd_core.envdfile.pysteps import (
    CONDA_ENV,
    MICROMAMBA_IMAGE,
    VENV,
    PythonInstaller,
    image_python,
    pip_words,
)


def _compile(tmp_path: Path, body: str, **opts: object):
    (tmp_path / "build.envd").write_text(
        "def build():\n" + "".join(f"    {ln}\n" for ln in body.strip().splitlines()))
    g = evaluate(tmp_path / "build.envd", context_dir=tmp_path)
    return compile_graph(g, options=CompileOptions(context_dir=tmp_path, **opts))


def _ops(c) -> list[ops_pb2.Op]:
    return [ops_pb2.Op.FromString(b) for b in getattr(c.definition, "def")]


def _argvs(c) -> list[list[str]]:
    return [list(o.exec.meta.args) for o in _ops(c) if o.WhichOneof("op") == "exec"]


def _images(c) -> list[str]:
    return [o.source.identifier for o in _ops(c) if o.WhichOneof("op") == "source"]


@pytest.mark.parametrize(("ref", "version"), [
    ("127.0.0.1:5000/python:3.11-bookworm", "3.11"),
    ("python:3.9.18-slim", "3.9"),
    ("debian:bookworm", "3.11"),
    ("docker.io/library/debian:12-slim", "3.11"),
    ("ubuntu:22.04", "3.10"),
    ("docker.io/nvidia/cuda:12.2.0-cudnn8-runtime-ubuntu22.04", "3.10"),
    ("busybox:latest", None),
    ("python:latest", None),
])
def test_image_python_is_guessed_from_well_known_names(ref: str, version: str | None) -> None:
    assert image_python(ref) == version


def test_a_version_the_image_has_uses_a_checked_venv(tmp_path: Path) -> None:
    c = _compile(tmp_path, 'base(image="127.0.0.1:5000/debian:bookworm")\n'
                           'install.python(version="3.11")')
    (venv,) = [a for a in _argvs(c) if a[-1].endswith(f"python3 -m venv {VENV}")]
    assert '"$have" in 3.11|3.11.*' in venv[-1]  # the name-based guess is verified in the step
    assert not any("micromamba" in i for i in _images(c))


def test_another_version_is_installed_with_micromamba_like_upstream(tmp_path: Path) -> None:
    c = _compile(tmp_path, 'base(image="127.0.0.1:5000/python:3.11-bookworm")\n'
                           'install.python(version="3.9")\n'
                           'install.python_packages(name=["six"])')
    assert f"docker-image://{MICROMAMBA_IMAGE}" in _images(c)
    argvs = _argvs(c)
    create = f"/usr/local/bin/micromamba create -p {CONDA_ENV} -c defaults python=3.9"
    assert ["bash", "-c", create] in argvs
    assert ["rm", "/usr/local/bin/micromamba"] in argvs
    alt = next(a for a in argvs if "update-alternatives" in a[-1])[-1]
    for name in ("python", "python3", "pip", "pip3"):
        assert f"--install /usr/bin/{name} {name} {CONDA_ENV}/bin/{name} 1" in alt
    assert [f"{CONDA_ENV}/bin/python", "-m", "pip", "install", "six"] in argvs
    assert not any("venv" in " ".join(a) for a in argvs)
    env = c.image_config["config"]["Env"]
    assert any(e.startswith(f"PATH={CONDA_ENV}/bin:") for e in env)
    copies = [a.copy for o in _ops(c) if o.WhichOneof("op") == "file" for a in o.file.actions
              if a.WhichOneof("action") == "copy"]
    assert {(cp.src, cp.dest) for cp in copies} == {
        ("/etc/ssl/certs/ca-certificates.crt", "/etc/ssl/certs"),
        ("/bin/micromamba", "/usr/local/bin")}


def test_default_image_gets_python_3_11_from_micromamba(tmp_path: Path) -> None:
    # upstream's default base ubuntu:22.04 ships 3.10; install.python() means 3.11 there
    c = _compile(tmp_path, "install.python()")
    assert any(a[-1].endswith("python=3.11") for a in _argvs(c))


def test_installer_source_is_configurable(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    inst = PythonInstaller(image="127.0.0.1:5000/micromamba:2", channel="file:///chan")
    c = _compile(tmp_path, 'install.python(version="3.12")', python_installer=inst)
    assert "docker-image://127.0.0.1:5000/micromamba:2" in _images(c)
    assert any(a[-1].endswith("-c file:///chan python=3.12") for a in _argvs(c))
    monkeypatch.setenv("ENVD_MICROMAMBA_IMAGE", "127.0.0.1:5000/mm:1")
    assert PythonInstaller().image == "127.0.0.1:5000/mm:1"


def test_python_2_and_odd_versions_are_refused_at_the_call(tmp_path: Path) -> None:
    from envd_core.envdfile.errors import BuildFileError

    for version in ("2.7", "4.0", "3x"):
        (tmp_path / "build.envd").write_text(
            f'def build():\n    install.python(version="{version}")\n')
        with pytest.raises(BuildFileError) as info:
            evaluate(tmp_path / "build.envd", context_dir=tmp_path)
        assert str(info.value).startswith("build.envd:2:5: `install.python`"), str(info.value)


@pytest.mark.parametrize(("entries", "words"), [
    (["torch --index-url https://download.pytorch.org/whl/cpu"],
     ["torch", "--index-url", "https://download.pytorch.org/whl/cpu"]),
    (["--extra-index-url https://x/simple", "numpy"],
     ["--extra-index-url", "https://x/simple", "numpy"]),
    (["-f URL", "pkg>=1.0"], ["-f", "URL", "pkg>=1.0"]),
    (['"name with space"', "a # comment"], ["name with space", "a"]),
])
def test_pip_entries_split_into_words(entries: list[str], words: list[str]) -> None:
    assert pip_words(entries) == words


def test_one_pip_step_per_call_in_call_order(tmp_path: Path) -> None:
    c = _compile(tmp_path, '''
base(image="127.0.0.1:5000/python:3.11-bookworm")
install.python_packages(name=["torch --index-url https://download.pytorch.org/whl/cpu"])
install.python_packages(name=["six", "attrs"])
config.jupyter()
''')
    pips = [a[3:] for a in _argvs(c) if a[1:4] == ["-m", "pip", "install"]]
    assert pips == [["install", "torch", "--index-url", "https://download.pytorch.org/whl/cpu"],
                    ["install", "six", "attrs"], ["install", "jupyter"]]
