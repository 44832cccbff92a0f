"""Graph → LLB: the ops, mounts and env each build.envd feature compiles to."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from envd_core.buildkit._pb import ops_pb2
from envd_core.envdfile.compile import (
    APT_CA_PATH,
    CA_PATH,
    CA_SECRET_ID,
    CONTEXT_NAME,
    RUN_WRAPPER,
    CompileOptions,
    compile_graph,
)
from envd_core.envdfile.graph import BuildGraph
from envd_core.envdfile.lang import evaluate
from envd_core.envdfile.pysteps import VENV


def ops(compiled) -> list[ops_pb2.Op]:
    return [ops_pb2.Op.FromString(b) for b in getattr(compiled.definition, "def")]


def execs(compiled) -> list[ops_pb2.ExecOp]:
    return [o.exec for o in ops(compiled) if o.WhichOneof("op") == "exec"]


def script(ex: ops_pb2.ExecOp) -> str:
    return ex.meta.args[-1]


def env(ex: ops_pb2.ExecOp) -> dict[str, str]:
    return dict(e.split("=", 1) for e in ex.meta.env)


def graph_of(tmp_path: Path, body: str, **files: str) -> BuildGraph:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    (tmp_path / "build.envd").write_text("def build():\n" + "".join(
        f"    {line}\n" for line in body.strip().splitlines()))
    return evaluate(tmp_path / "build.envd", context_dir=tmp_path)


def compile_(tmp_path: Path, body: str, **opts: object):
    files = opts.pop("files", {})
    g = graph_of(tmp_path, body, **files)  # type: ignore[arg-type]
    return compile_graph(g, options=CompileOptions(context_dir=tmp_path, **opts))


def test_base_image_only(tmp_path: Path) -> None:
    c = compile_(tmp_path, 'base(image="127.0.0.1:5000/debian:bookworm")')
    first = ops(c)[0]
    assert first.source.identifier == "docker-image://127.0.0.1:5000/debian:bookworm"
    assert first.platform.OS == "linux" and first.platform.Architecture == "amd64"
    assert c.local_dirs == {} and c.secrets_needed == [] and c.entitlements == []
    # The terminal op has no body; the Definition round-trips.
    assert ops(c)[-1].WhichOneof("op") is None
    assert ops_pb2.Definition.FromString(c.dump_llb()) == c.definition


def test_apt_uses_locked_cache_mounts(tmp_path: Path) -> None:
    c = compile_(tmp_path, 'install.apt_packages(name=["jq", "curl"])')
    (apt,) = execs(c)
    assert "apt-get install -y --no-install-recommends $pkgs" in script(apt)
    assert "pkgs='jq curl'" in script(apt)
    caches = {m.dest: m.cacheOpt for m in apt.mounts if m.mountType == ops_pb2.CACHE}
    assert set(caches) == {"/var/cache/apt", "/var/lib/apt"}
    assert all(o.sharing == ops_pb2.LOCKED for o in caches.values())


def test_python_creates_a_venv_and_pip_uses_a_cache(tmp_path: Path) -> None:
    # Debian bookworm ships Python 3.11, the version install.python() asks for: no micromamba
    c = compile_(tmp_path, '''
base(image="127.0.0.1:5000/debian:bookworm")
install.python()
install.python_packages(name=["six"], requirements="req.txt")
config.pip_index(url="http://127.0.0.1:3141/simple", trust=True)
''', files={"req.txt": "attrs\n"})
    apt, venv, pip, req = execs(c)
    assert "python3 python3-venv" in script(apt)
    assert script(venv).endswith(f"python3 -m venv {VENV}") and "3.11" in script(venv)
    assert list(pip.meta.args) == [f"{VENV}/bin/python", "-m", "pip", "install", "six"]
    assert list(req.meta.args) == [f"{VENV}/bin/python", "-m", "pip", "install", "-r",
                                   "/run/envd/context/req.txt"]
    e = env(pip)
    assert e["PATH"].startswith(f"{VENV}/bin:")
    assert e["PIP_INDEX_URL"] == "http://127.0.0.1:3141/simple"
    assert e["PIP_TRUSTED_HOST"] == "127.0.0.1"
    assert any(m.dest == "/root/.cache/pip" and m.mountType == ops_pb2.CACHE for m in pip.mounts)
    assert any(m.dest == "/run/envd/context" and m.readonly for m in req.mounts)
    ctx = [o for o in ops(c) if o.WhichOneof("op") == "source"
           and o.source.identifier == f"local://{CONTEXT_NAME}"]
    assert ctx and ctx[0].source.attrs["local.sharedkeyhint"] == CONTEXT_NAME
    assert ctx[0].source.attrs["local.includepattern"] == '["req.txt"]'
    assert c.local_dirs == {CONTEXT_NAME: str(tmp_path.absolute())}
    config = c.image_config["config"]
    assert f"PATH={VENV}/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
        in config["Env"]
    assert f"VIRTUAL_ENV={VENV}" in config["Env"]
    # The index URL is a build-time setting, never part of the image.
    assert not any("PIP_INDEX_URL" in e for e in config["Env"])


def test_ca_bundle_is_a_secret_of_network_steps_only(tmp_path: Path) -> None:
    c = compile_(tmp_path, '''
install.python_packages(name=["six"])
run(["echo hi"])
''', ca_bundle_secret=True, proxy_env={"HTTPS_PROXY": "http://127.0.0.1:3128"})
    apt, venv, pip, user_run = execs(c)
    for ex, path in ((apt, APT_CA_PATH), (pip, CA_PATH), (user_run, CA_PATH)):
        secrets = [m for m in ex.mounts if m.mountType == ops_pb2.SECRET]
        assert [(m.dest, m.secretOpt.ID) for m in secrets] == [(path, CA_SECRET_ID)]
        assert env(ex)["SSL_CERT_FILE"] == path and env(ex)["PIP_CERT"] == path
        assert env(ex)["HTTPS_PROXY"] == "http://127.0.0.1:3128"
    assert not any(m.mountType == ops_pb2.SECRET for m in venv.mounts)
    assert "SSL_CERT_FILE" not in env(venv) and "HTTPS_PROXY" not in env(venv)
    assert c.secrets_needed == [CA_SECRET_ID]
    assert not any("SSL_CERT_FILE" in e or "PROXY" in e for e in c.image_config["config"]["Env"])


def test_copy_from_context_and_image_and_http(tmp_path: Path) -> None:
    c = compile_(tmp_path, '''
io.copy("app/x.py", "/opt/x.py")
io.copy("/bin/busybox", "/usr/local/bin/busybox", image="127.0.0.1:5000/busybox:latest")
io.http(url="https://example.com/data.bin", checksum="''' + "b" * 64 + '''")
''', files={"app/x.py": "print(1)\n"})
    file_ops = [o.file for o in ops(c) if o.WhichOneof("op") == "file"]
    copies = [a.copy for f in file_ops for a in f.actions if a.WhichOneof("action") == "copy"]
    # upstream's order and place: downloads first, into /home/envd/extra_source/<filename>
    assert [(cp.src, cp.dest) for cp in copies] == [
        ("/", "/home/envd/extra_source"), ("/app/x.py", "/opt/x.py"),
        ("/bin/busybox", "/usr/local/bin/busybox")]
    sources = {o.source.identifier: o.source.attrs for o in ops(c)
               if o.WhichOneof("op") == "source"}
    assert sources["https://example.com/data.bin"]["http.checksum"] == "sha256:" + "b" * 64
    assert "docker-image://127.0.0.1:5000/busybox:latest" in sources


def test_run_steps_in_order_with_mount_host(tmp_path: Path) -> None:
    c = compile_(tmp_path, '''
run(["echo one", "echo two"])
run("ls", mount_host=True)
''', no_cache=True)
    first, second = execs(c)
    assert script(first) == "echo one\necho two"
    assert list(first.meta.args[:-1]) == RUN_WRAPPER and first.meta.cwd == "/"
    assert second.meta.cwd == "/run/envd/context"
    assert any(m.dest == "/run/envd/context" and m.readonly for m in second.mounts)
    ignore = [md.ignore_cache for md in c.definition.metadata.values()]
    assert ignore.count(True) == 2


def test_git_config_and_dev_workdir(tmp_path: Path) -> None:
    ctx = tmp_path / "My Project!"
    ctx.mkdir()
    c = compile_(ctx, 'base(dev=True)\ngit_config(name="A", email="a@b.c", editor="vim")\n'
                      'run("pwd", mount_host=True)')
    (_, run_step) = execs(c)  # apt (git), then the run step in the working dir
    assert run_step.meta.cwd == "/home/envd/MyProject"
    assert any(m.dest == "/home/envd/MyProject" and m.readonly for m in run_step.mounts)
    mk = [a for o in ops(c) if o.WhichOneof("op") == "file" for a in o.file.actions]
    gitconfig = [a.mkfile for a in mk if a.WhichOneof("action") == "mkfile"]
    assert gitconfig[0].path == "/etc/gitconfig"
    assert b"email = a@b.c" in gitconfig[0].data and b"editor = vim" in gitconfig[0].data
    assert c.image_config["config"]["WorkingDir"] == "/home/envd/MyProject"
    labels = c.image_config["config"]["Labels"]
    assert labels["ai.tensorchord.envd.container.name"] == "MyProject"


def test_platform_and_cuda_base(tmp_path: Path) -> None:
    g = BuildGraph(cuda="12.2.0", cudnn="8")
    c = compile_graph(g, options=CompileOptions(context_dir=tmp_path), platform="linux/arm64")
    first = ops(c)[0]
    # upstream's GetCUDAImage: the runtime flavour unless base(dev=True)
    assert first.source.identifier == \
        "docker-image://docker.io/nvidia/cuda:12.2.0-cudnn8-runtime-ubuntu22.04"
    assert first.platform.Architecture == "arm64"
    assert c.image_config["architecture"] == "arm64"


def test_digests_are_deterministic(tmp_path: Path) -> None:
    body = 'install.python_packages(name=["six"])\nrun(["echo hi"])'
    a = compile_(tmp_path, body).dump_llb()
    b = compile_(tmp_path, body).dump_llb()
    assert a == b


def test_unbuildable_calls_are_refused_at_their_position(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The refusal mechanism (UNBUILDABLE is empty today: every upstream function builds)."""
    from envd_core.envdfile.errors import BuildFileError
    from envd_core.envdfile.lang import evaluator

    monkeypatch.setitem(evaluator.UNBUILDABLE, "install.julia", "a reason")
    with pytest.raises(BuildFileError) as info:
        compile_(tmp_path, 'install.python_packages(name=["six"])\ninstall.julia()')
    text = str(info.value)
    assert text.startswith("build.envd:3:5: `install.julia` cannot be built by this envd: "
                           "a reason"), text
    assert "\n" not in text
    (tmp_path / "build.envd").write_text("def build():\n    install.julia()\n")
    g = evaluate(tmp_path / "build.envd", context_dir=tmp_path, check_buildable=False)
    assert g.language("julia") is not None


def test_example_environment_compiles() -> None:
    from envd_core.envdfile import load_build

    example = Path(__file__).parents[3] / "examples" / "python-basic"
    g = load_build(example)
    c = compile_graph(g, options=CompileOptions(context_dir=example, ca_bundle_secret=True))
    assert g.apt_packages == ["jq"] and g.requirements_files == ["requirements.txt"]
    assert c.image_config["config"]["Entrypoint"] == ["python3", "/opt/app/hello.py"]
    assert "GREETING=hello from envd" in c.image_config["config"]["Env"]
    serving = load_build(example, "build.envd:serving")
    assert serving.runtime.expose[0].envd_port == 8000


def test_other_language_versions_are_reported_as_not_enforced(tmp_path: Path) -> None:
    c = compile_(tmp_path, 'install.python()\ninstall.go(version="1.22")\n'
                           'install.python(version="3.12")')
    # an explicit Python version is checked at build time instead (test_envdfile_python_version)
    assert [w.split("(")[0] for w in c.warnings] == ["install.go"]
    assert "not enforced" in c.warnings[0]
    assert compile_(tmp_path, "install.python()").warnings == []


def test_steps_see_the_declared_environment_like_upstreams(tmp_path: Path) -> None:
    c = compile_(tmp_path, 'runtime.environ(env={"MODEL": "tiny"})\nrun(["echo $MODEL"])')
    (step,) = execs(c)
    e = env(step)
    assert e["MODEL"] == "tiny" and e["DEBIAN_FRONTEND"] == "noninteractive"
    assert e["LANG"] == e["LC_ALL"] == "C.UTF-8"


def test_codex_is_copied_from_a_release_download_like_upstreams(tmp_path: Path) -> None:
    c = compile_(tmp_path, 'install.codex()')
    args = [list(e.meta.args) for e in execs(c)]
    download = ("wget -qO- https://github.com/openai/codex/releases/download/rust-v0.98.0/"
                "codex-$(uname -m)-unknown-linux-musl.tar.gz | tar -xz -C /tmp || exit 1")
    assert ["sh", "-c", download] in args
    copies = [a.copy for o in ops(c) if o.WhichOneof("op") == "file" for a in o.file.actions
              if a.WhichOneof("action") == "copy"]
    assert [(cp.src, cp.dest) for cp in copies] == [("/tmp/codex", "/usr/bin/codex")]


def test_rstudio_server_installs_nothing_and_adds_its_port_like_upstream(tmp_path: Path) -> None:
    # upstream expects RStudio Server in the image (a rocker base) and only runs it
    c = compile_(tmp_path, 'base(image="127.0.0.1:5000/debian:bookworm", dev=True)\n'
                           'config.rstudio_server()')
    assert execs(c) == []
    assert "8787/tcp" in c.image_config["config"]["ExposedPorts"]
    assert {"name": "rstudio-server", "port": 8787} in json.loads(
        c.image_config["config"]["Labels"]["ai.tensorchord.envd.ports"])


def test_julia_and_pixi_as_upstream_installs_them(tmp_path: Path) -> None:
    c = compile_(tmp_path, '''
install.julia()
install.julia_packages(name=["Example", "JSON"])
install.julia_packages(name=["Flux"])
install.pixi(use_pixi_mirror=True, pypi_index="https://pypi.example/simple")
''')
    args = [list(e.meta.args) for e in execs(c)]
    unpack = "tar zxvf /tmp/julia.tar.gz --strip 1 -C /opt/julia && rm /tmp/julia.tar.gz"
    assert ["bash", "-c", unpack] in args
    assert args[-2:] == [["julia", "-e", 'using Pkg; Pkg.add(["Example","JSON"])'],
                         ["julia", "-e", 'using Pkg; Pkg.add(["Flux"])']]
    sources = {o.source.identifier: dict(o.source.attrs) for o in ops(c)
               if o.WhichOneof("op") == "source"}
    julia = ("https://julialang-s3.julialang.org/bin/linux/x64/1.10/"
             "julia-1.10.10-linux-x86_64.tar.gz")
    assert sources[julia]["http.checksum"].startswith("sha256:6a78a03a")
    env = dict(e.split("=", 1) for e in c.image_config["config"]["Env"])
    assert env["JULIA_DEPOT_PATH"] == "/opt/julia/user_packages"
    assert "/opt/julia/bin" in env["PATH"].split(":")
    files = {a.mkfile.path: a.mkfile.data for o in ops(c) if o.WhichOneof("op") == "file"
             for a in o.file.actions if a.WhichOneof("action") == "mkfile"}
    config = files["/etc/pixi/config.toml"].decode()
    assert config.startswith("[mirrors]") and 'index-url = "https://pypi.example/simple"' in config
    copies = [a.copy for o in ops(c) if o.WhichOneof("op") == "file" for a in o.file.actions
              if a.WhichOneof("action") == "copy"]
    assert ("/tmp/pixi", "/usr/bin/pixi") in [(cp.src, cp.dest) for cp in copies]
