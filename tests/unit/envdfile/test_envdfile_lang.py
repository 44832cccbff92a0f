"""Evaluation of build.envd files: upstream's functions, load(), sandbox, error messages."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envd_core.envdfile import load_build
from envd_core.envdfile.errors import (
    BuildFileError,
    BuildFileNotFoundError,
    BuildFunctionError,
)
from envd_core.envdfile.graph import DEFAULT_IMAGE, BuildGraph
from envd_core.envdfile.lang import evaluate
from envd_core.errors import BuildError, EnvdError


def write(dir_: Path, name: str, text: str) -> Path:
    path = dir_ / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def run(tmp_path: Path, text: str, function: str = "build", **kw: object) -> BuildGraph:
    write(tmp_path, "build.envd", text)
    return evaluate(tmp_path / "build.envd", context_dir=tmp_path, function=function, **kw)


def fails(tmp_path: Path, text: str, function: str = "build", **kw: object) -> BuildFileError:
    with pytest.raises(BuildFileError) as info:
        run(tmp_path, text, function, **kw)
    return info.value


def test_full_upstream_surface_fills_the_graph(tmp_path: Path) -> None:
    g = run(tmp_path, """
        # syntax=v1
        def build():
            base(image="debian:bookworm", dev=True)
            shell("ZSH")
            install.python(version="3.10")
            install.apt_packages(name=["git", "curl", "git"])
            install.python_packages(name=["numpy", "rich"], requirements="requirements.txt",
                                    local_wheels=["wheels/a-1.0-py3-none-any.whl"])
            install.python_packages(["torch"])
            install.uv(python_version="3.12")
            install.conda(use_mamba=True)
            install.conda_packages(name=["scipy"], channel=["conda-forge"])
            install.cuda(version="12.2.0", cudnn="8")
            install.rust(); install.go(version="1.22"); install.nodejs(version="20")
            install.r_lang(); install.julia(); install.r_packages(name=["ggplot2"])
            install.julia_packages(name=["Flux"])
            install.vscode_extensions(name=["ms-python.python"])
            config.pip_index(url="https://pypi.example/simple", extra_url="https://x/simple",
                             trust=True)
            config.jupyter(token="", port=8888)
            config.gpu(count=2)
            config.shm_size(size=2048)
            config.entrypoint(["python", "-m", "app"])
            config.repo(url="https://github.com/a/b", description="demo")
            config.owner(uid=1000, gid=1000)
            config.apt_source(source="deb http://deb.debian.org/debian bookworm main")
            git_config(name="A", email="a@example.com", editor="vim")
            run(commands=["echo one", "echo two"], mount_host=False)
            io.copy(source="src", target="/opt/src")
            io.copy("/usr/bin/tool", "/usr/local/bin/tool", image="busybox:latest")
            io.http(url="https://example.com/f.tar.gz", checksum="a" * 64)
            runtime.command(commands={"serve": "python -m http.server"})
            runtime.daemon(commands=[["python", "-m", "http.server"]])
            runtime.expose(envd_port=8000, host_port=8001, service="web")
            runtime.environ(env={"A": "1"}, extra_path=["/opt/tools/bin"])
            runtime.mount(host_path=data.envd("imagenet"), envd_path=data.path.huggingface)
            runtime.init(["echo init"])
    """, check_buildable=False)
    assert (g.image, g.dev, g.shell) == ("debian:bookworm", True, "zsh")
    assert g.apt_packages == ["git", "curl"]
    assert g.python_packages == [["numpy", "rich"], ["torch"]]
    assert g.python_commands() == ["numpy", "rich", "torch"]
    assert g.requirements_files == ["requirements.txt"]
    assert g.local_wheels == ["wheels/a-1.0-py3-none-any.whl"]
    assert g.language("python").version == "3.10"
    assert [lang.name for lang in g.languages] == ["python", "rust", "go", "nodejs", "r", "julia"]
    assert g.uv_python == "3.12"
    assert g.conda.use_mamba and g.conda.packages == ["scipy"]
    assert (g.cuda, g.cudnn) == ("12.2.0", "8")
    assert g.pip_index.url == "https://pypi.example/simple" and g.pip_index.trust
    assert g.jupyter.port == 8888 and g.gpu_count == 2 and g.shm_size == 2048
    assert g.entrypoint == ["python", "-m", "app"]
    assert (g.owner_uid, g.owner_gid) == (1000, 1000)
    assert g.git.email == "a@example.com"
    assert g.run_steps[0].commands == ["echo one", "echo two"]
    assert [(c.source, c.target, c.image) for c in g.copies] == [
        ("src", "/opt/src", ""), ("/usr/bin/tool", "/usr/local/bin/tool", "busybox:latest")]
    assert g.downloads[0].filename == "f.tar.gz"
    assert g.downloads[0].checksum == "sha256:" + "a" * 64
    assert g.runtime.commands == {"serve": "python -m http.server"}
    assert g.runtime.expose[0].envd_port == 8000
    assert g.runtime.environ == {"A": "1"} and g.runtime.env_paths == ["/opt/tools/bin"]
    assert g.runtime.mounts[0].source == "~/.envd/data/imagenet"
    assert g.runtime.mounts[0].destination == "~/.cache/huggingface"
    assert g.runtime.init == [["echo init"]]


def test_defaults_match_upstream(tmp_path: Path) -> None:
    g = run(tmp_path, """
        def build():
            base()
            install.python()
    """)
    assert g.image == DEFAULT_IMAGE == "ubuntu:22.04"
    assert g.dev is False
    assert g.language("python").version == "3.11"


def test_entrypoint_appends_and_expose_listens_on_loopback_like_upstream(
        tmp_path: Path) -> None:
    g = run(tmp_path, """
        def build():
            config.entrypoint(["python"])
            config.entrypoint(["-m", "app"])
            runtime.expose(envd_port=8000)
    """)
    assert g.entrypoint == ["python", "-m", "app"]
    assert g.runtime.expose[0].listen_addr == "127.0.0.1"


def test_expose_refuses_a_listen_addr_that_is_not_an_ip(tmp_path: Path) -> None:
    err = fails(tmp_path, """
        def build():
            runtime.expose(envd_port=8000, listen_addr="localhost")
    """)
    assert "`localhost`" in str(err) and "listen_addr" in str(err)


def test_several_entry_functions_and_from(tmp_path: Path) -> None:
    write(tmp_path, "build.envd", """
        def build():
            base(dev=True)
        def serving():
            base(image="python:3.11-slim")
            install.python_packages(name=["fastapi"])
    """)
    assert load_build(tmp_path).dev is True
    g = load_build(tmp_path, "build.envd:serving")
    assert g.image == "python:3.11-slim" and g.python_commands() == ["fastapi"]
    assert load_build(tmp_path, ":serving").image == "python:3.11-slim"


def test_from_other_file_relative_to_cwd(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    write(tmp_path, "other/gpu.envd", "def gpu():\n    install.cuda(version='11.8')\n")
    g = load_build(ctx, "other/gpu.envd:gpu", cwd=tmp_path)
    assert g.cuda == "11.8"


def test_load_is_relative_cached_and_rooted(tmp_path: Path) -> None:
    write(tmp_path, "lib/common.envd", """
        load("helpers.envd", "pkgs")
        COUNT = []
        def common():
            install.python_packages(name=pkgs())
    """)
    write(tmp_path, "lib/helpers.envd", "def pkgs():\n    return ['requests']\n")
    g = run(tmp_path, """
        load("//lib/common.envd", "common")
        load("lib/common.envd", again="common")
        def build():
            common()
            again()
    """)
    assert g.python_packages == [["requests"], ["requests"]]


def test_load_cycle_is_reported_with_the_chain(tmp_path: Path) -> None:
    write(tmp_path, "a.envd", 'load("b.envd", "x")\ny = 1\n')
    write(tmp_path, "b.envd", 'load("a.envd", "y")\nx = 1\n')
    err = fails(tmp_path, 'load("a.envd", "y")\ndef build():\n    pass\n')
    assert "load cycle: build.envd -> a.envd -> b.envd -> a.envd" in str(err)


@pytest.mark.parametrize("module_id, words", [
    ("../outside.envd", "outside the build context"),
    ("/etc/passwd.envd", "absolute path"),
    ("lib/x.txt", "must name a `.envd` file"),
    ("missing.envd", "no such file"),
])
def test_load_refuses_paths_outside_and_odd_names(
    tmp_path: Path, module_id: str, words: str
) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (tmp_path / "outside.envd").write_text("x = 1\n")
    err = fails(ctx, f'load("{module_id}", "x")\ndef build():\n    pass\n')
    assert words in str(err)
    assert str(err).startswith("build.envd:1:1: ")


def test_symlink_out_of_the_context_is_refused(tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (tmp_path / "secret.envd").write_text("x = 1\n")
    (ctx / "link.envd").symlink_to(tmp_path / "secret.envd")
    err = fails(ctx, 'load("link.envd", "x")\ndef build():\n    pass\n')
    assert "outside the build context" in str(err)


def test_sandbox_has_no_io_builtins(tmp_path: Path) -> None:
    for name in ("open", "exec", "eval", "__import__", "input", "environ"):
        err = fails(tmp_path, f"def build():\n    {name}('x')\n")
        assert f"unknown name `{name}`" in str(err)


def test_no_top_level_control_flow_or_while(tmp_path: Path) -> None:
    assert "`for` cannot be used outside `def`" in str(
        fails(tmp_path, "for x in [1]:\n    pass\ndef build():\n    pass\n"))
    assert "syntax error" in str(fails(tmp_path, "def build():\n    while True:\n        pass\n"))


def test_endless_loop_is_cancelled(tmp_path: Path) -> None:
    err = fails(tmp_path, """
        def build():
            for i in range(1000000000):
                pass
    """, timeout=0.2)
    assert "was stopped" in str(err) and "endless loop" in str(err)


def test_endless_recursion_is_reported(tmp_path: Path) -> None:
    err = fails(tmp_path, "def f(n):\n    return f(n + 1)\ndef build():\n    f(0)\n")
    assert "recursion is too deep" in str(err)
    assert err.file == "build.envd" and err.line == 2


def test_wrong_type_names_argument_and_expectation(tmp_path: Path) -> None:
    err = fails(tmp_path, 'def build():\n    install.python_packages(name="numpy")\n')
    assert str(err) == (
        "build.envd:2:5: `install.python_packages` argument `name` must be a list of strings "
        'or None, got string `"numpy"`'
    )
    assert (err.file, err.line, err.column) == ("build.envd", 2, 5)
    assert "^^^" in (err.excerpt or "")
    assert isinstance(err, BuildError)


def test_unknown_keyword_lists_accepted_arguments(tmp_path: Path) -> None:
    err = fails(tmp_path, 'def build():\n    base(imag="x")\n')
    assert "`base` has no argument `imag`; it accepts: image, dev" in str(err)


def test_missing_and_extra_positional_arguments(tmp_path: Path) -> None:
    assert "needs the argument `version`" in str(
        fails(tmp_path, "def build():\n    install.cuda()\n"))
    assert "at most 2 positional" in str(fails(tmp_path, "def build():\n    base('a', True, 3)\n"))


def test_unknown_function_suggests_nearest_names(tmp_path: Path) -> None:
    err = fails(tmp_path, "def build():\n    install.pythn_packages(name=['x'])\n")
    assert "`install` has no function `pythn_packages`; did you mean `install.python_packages`" \
        in str(err)
    err = fails(tmp_path, "def build():\n    bsae()\n")
    assert "unknown name `bsae`; did you mean `base`" in str(err)
    err = fails(tmp_path, "def build():\n    python_packages()\n")
    assert "`install.python_packages`" in str(err)


def test_unknown_entry_function_suggests_defined_ones(tmp_path: Path) -> None:
    with pytest.raises(BuildFunctionError) as info:
        run(tmp_path, "def build():\n    pass\ndef serving():\n    pass\n", function="serve")
    msg = str(info.value)
    assert "no function `serve`; did you mean `serving`?" in msg
    assert "defined: build, serving" in msg


def test_entry_function_with_required_parameters(tmp_path: Path) -> None:
    err = fails(tmp_path, "def build(x):\n    pass\n")
    assert "called with no arguments" in str(err)


def test_syntax_error_has_location(tmp_path: Path) -> None:
    err = fails(tmp_path, "def build(:\n    pass\n")
    assert str(err).startswith("build.envd:1:11: syntax error")


def test_syntax_v0_is_fatal(tmp_path: Path) -> None:
    err = fails(tmp_path, "# syntax=v0\ndef build():\n    pass\n")
    assert "syntax=v0" in str(err) and err.line == 1


def test_missing_build_file(tmp_path: Path) -> None:
    with pytest.raises(BuildFileNotFoundError) as info:
        load_build(tmp_path, cwd=tmp_path)
    assert "does not exist" in str(info.value)


def test_include_outside_a_top_level_assignment_says_how(tmp_path: Path) -> None:
    # the working form is tested against real repositories in test_envdfile_include.py
    err = fails(tmp_path, 'def build():\n    include(git="https://github.com/x/y")\n')
    assert "build.envd:2:5: `include` must be assigned at the top level" in str(err)
    assert 'lib = include(git="https://github.com/x/y")' in str(err)


@pytest.mark.parametrize("call, words", [
    ('shell("tcsh")', "does not know the shell `tcsh`"),
    ('install.python(version="2.7")', "does not support Python 2"),
    ('io.copy("../x", "/x")', "outside the build context"),
    ('io.http(url="ftp://x")', "must start with http://"),
    ('io.http(url="https://x/y", checksum="abc")', "sha256 hex digest"),
    ('config.pip_index(url="pypi.org")', "must start with http"),
    ('runtime.expose(envd_port=70000)', "must be a port"),
    ('config.shm_size(size="lots")', "is not a size"),
    ('install.vscode_extensions(name=["python"])', "publisher.extension"),
    ('run([])', "at least one command"),
])
def test_value_errors_are_one_line(tmp_path: Path, call: str, words: str) -> None:
    err = fails(tmp_path, f"def build():\n    {call}\n")
    assert words in str(err) and "\n" not in str(err)
    assert str(err).startswith("build.envd:2:5: ")


def test_errors_in_loaded_files_name_that_file(tmp_path: Path) -> None:
    write(tmp_path, "lib/bad.envd", "def f():\n    install.apt_packages(name=1)\n")
    err = fails(tmp_path, 'load("lib/bad.envd", "f")\ndef build():\n    f()\n')
    assert str(err).startswith("lib/bad.envd:2:5: `install.apt_packages` argument `name`")


def test_user_config_is_evaluated_first(tmp_path: Path) -> None:
    cfg = write(tmp_path, "cfg/config.envd", 'config.pip_index(url="https://mirror/simple")\n')
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    write(ctx, "build.envd", "def build():\n    install.python()\n")
    g = load_build(ctx, user_config=cfg)
    assert g.pip_index.url == "https://mirror/simple"


# ----------------------------------------------------------------- vendor extension
def tensorrt(graph: BuildGraph, version: str = "10") -> None:
    graph.apt_packages.append(f"tensorrt-{version}")


def mycorp_setup(graph: BuildGraph, proxy: bool = False) -> str:
    graph.labels["mycorp.proxy"] = str(proxy).lower()
    return "done"


def test_vendor_functions_extend_modules_and_universe(tmp_path: Path) -> None:
    g = run(tmp_path, """
        def build():
            install.tensorrt(version="8")
            install.python()
            x = mycorp_setup(proxy=True)
            if x != "done":
                fail("unexpected")
            mycorp.lint()
    """, extra_functions={
        "install.tensorrt": tensorrt,
        "mycorp_setup": mycorp_setup,
        "mycorp.lint": lambda graph: graph.extensions.update(linted=True),
    })
    assert g.apt_packages == ["tensorrt-8"]
    assert g.labels == {"mycorp.proxy": "true"}
    assert g.extensions["linted"] is True
    assert g.language("python") is not None


def test_vendor_function_arguments_are_checked(tmp_path: Path) -> None:
    err = fails(tmp_path, 'def build():\n    install.tensorrt(version=8)\n',
                extra_functions={"install.tensorrt": tensorrt})
    assert "`install.tensorrt` argument `version` must be a string, got int `8`" in str(err)


def test_vendor_function_crash_is_one_line_error(tmp_path: Path) -> None:
    def broken(graph: BuildGraph) -> None:
        raise KeyError("boom")

    err = fails(tmp_path, "def build():\n    vendor_broken()\n",
                extra_functions={"vendor_broken": broken})
    assert "`vendor_broken` failed: KeyError" in str(err)


@pytest.mark.parametrize("name", ["", "a.b.c", "load", "1x", "data.path", "install"])
def test_bad_vendor_names_are_plugin_errors(tmp_path: Path, name: str) -> None:
    with pytest.raises(EnvdError) as info:
        run(tmp_path, "def build():\n    pass\n", extra_functions={name: tensorrt})
    assert "build function name" in str(info.value)


def test_vendor_functions_through_a_pluggy_plugin(tmp_path: Path) -> None:
    from envd_core import hookimpl
    from envd_core.plugins import Plugins

    class Vendor:
        @hookimpl
        def envd_build_functions(self) -> dict[str, object]:
            return {"install.tensorrt": tensorrt}

    plugins = Plugins.create(entry_points=False, extra=[("vendor", Vendor())])
    write(tmp_path, "build.envd", "def build():\n    install.tensorrt()\n")
    g = load_build(tmp_path, extra_functions=plugins.build_functions())
    assert g.apt_packages == ["tensorrt-10"]


def test_importing_the_build_package_stays_cheap() -> None:
    import subprocess
    import sys

    code = (
        "import sys, envd_core.envdfile, envd_core.envdfile.buildflags, envd_core.envdfile.graph, "
        "envd_core.envdfile.image_config, envd_core.envdfile.lang\n"
        "heavy = [m for m in ('starlark', 'grpc', 'google.protobuf') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


_FRAGMENTS = [
    "def build():\n", "    ", "install.", "config.", "io.", "runtime.", "data.", "base(",
    "python_packages(", "apt_packages(", "name=", "[", "]", "(", ")", '"x"', "1", "True",
    "None", ",", "\n", "load(", '"//a.envd"', "struct(", "lambda x: x", "{", "}", ":", "=",
    "run(", "shell(", "copy(", "expose(", "envd_port=", "-1", "99999", "pass\n", "return ",
]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=25).map("".join))
def test_any_build_file_gives_a_graph_or_an_envd_error(tmp_path_factory, text: str) -> None:
    ctx = tmp_path_factory.mktemp("fuzz")
    (ctx / "build.envd").write_text("def build():\n    pass\n" + text)
    try:
        graph = evaluate(ctx / "build.envd", context_dir=ctx)
    except EnvdError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert graph.digest().startswith("sha256:")
