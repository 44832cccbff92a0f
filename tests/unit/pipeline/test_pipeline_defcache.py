"""The definition cache (envd_core.pipeline.defcache): reused only when nothing read changed.

Every test builds with ``envd build --dump-llb`` on the test builder (no daemon needed) and
counts evaluations by wrapping ``load_build_recorded``; the LLB is compared with a build that has
the cache off, so a stale hit shows as different bytes.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envd_core.envdfile
from envd_core.pipeline import defcache
from envd_core.testing import StubBuilder, StubRunner, make_plugin

BUILD = ('load("//lib/tools.envd", "tools")\n'
         'def build():\n    base(image="127.0.0.1:5000/debian:bookworm", dev=False)\n'
         '    tools()\n    install.python_packages(requirements="requirements.txt")\n')
LIB = 'def tools():\n    install.apt_packages(["jq"])\n'


def _read_version(graph: Any, name: str = "VERSION") -> None:
    """A vendor function that reads a file of the build context at evaluation time."""
    with open(name, encoding="utf-8") as fh:
        graph.apt_packages.append("tool-" + fh.read().strip())


def _run_git(graph: Any) -> None:
    """A vendor function whose result depends on the world (a subprocess)."""
    out = subprocess.run(["true"], check=False)
    graph.apt_packages.append(f"rc-{out.returncode}")


def _list_dirs(graph: Any) -> None:
    """A vendor function whose result depends on which entries of the context are folders."""
    import os

    with os.scandir(".") as entries:
        graph.apt_packages.extend(sorted("dir-" + e.name for e in entries if e.is_dir()))


def _random(graph: Any) -> None:
    """A vendor function that is not a function of its inputs."""
    with open("/dev/urandom", "rb") as fh:
        graph.apt_packages.append("r" + fh.read(4).hex())


def _if_present(graph: Any) -> None:
    """A vendor function whose result depends on a file that may not exist."""
    import os

    if os.path.exists("EXTRA"):
        graph.apt_packages.append("extra-present")


def _hostname(graph: Any) -> None:
    """A vendor function whose result depends on the machine, not on files."""
    import socket

    graph.apt_packages.append("host-" + socket.gethostname())


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ENVD_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ENVD_EVAL_CACHE", raising=False)
    proj = tmp_path / "project"
    (proj / "lib").mkdir(parents=True)
    (proj / "build.envd").write_text(BUILD)
    (proj / "lib" / "tools.envd").write_text(LIB)
    (proj / "requirements.txt").write_text("six\n")
    (proj / "VERSION").write_text("1\n")
    monkeypatch.chdir(proj)
    return proj


@pytest.fixture
def evaluations(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    real = envd_core.envdfile.load_build_recorded

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(envd_core.envdfile, "load_build_recorded", counting)
    return calls


@pytest.fixture
def build(cli: Any, register_plugin: Any, project: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    register_plugin(make_plugin(builders=[StubBuilder], runners=[StubRunner],
                                build_functions={"install.versioned": _read_version,
                                                 "install.shelled": _run_git,
                                                 "install.dirs": _list_dirs,
                                                 "install.random": _random,
                                                 "install.if_present": _if_present,
                                                 "install.hostname": _hostname}))
    made = cli("context", "create", "--name", "stub", "--builder", StubBuilder.name,
               "--builder-address", "x", "--runner", StubRunner.name, "--use")
    assert made.exit_code == 0, made

    def run(*flags: str, cache: bool = True) -> bytes:
        monkeypatch.setenv("ENVD_EVAL_CACHE", "1" if cache else "0")
        out = project.parent / "out.llb"
        result = cli("build", "--path", str(project), "--dump-llb", str(out), *flags)
        assert result.exit_code == 0, result
        return out.read_bytes()

    return run


def _entries(project: Path) -> list[Path]:
    return sorted((project.parent / "cache" / "definitions").glob("*.json"))


def test_an_unchanged_rebuild_reuses_the_same_bytes(build: Any, evaluations: list[int],
                                                    project: Path) -> None:
    first = build()
    second = build()
    assert evaluations == [1]  # the second build evaluated nothing
    assert second == first
    assert build(cache=False) == first  # byte-identical with the cache off
    assert len(_entries(project)) == 1


@pytest.mark.parametrize("edit", ["build file", "loaded file"])
def test_editing_a_build_file_invalidates(build: Any, evaluations: list[int], project: Path,
                                          edit: str) -> None:
    build()
    if edit == "build file":
        (project / "build.envd").write_text(BUILD + '    install.apt_packages(["git"])\n')
    else:
        (project / "lib" / "tools.envd").write_text(LIB.replace("jq", "curl"))
    after = build()
    assert evaluations == [1, 1]
    assert after == build(cache=False)
    assert (b"curl" if edit == "loaded file" else b"git") in after


def test_a_file_read_by_a_vendor_function_invalidates(build: Any, evaluations: list[int],
                                                      project: Path) -> None:
    (project / "build.envd").write_text(BUILD + "    install.versioned()\n")
    assert b"tool-1" in build()
    assert b"tool-1" in build()
    assert evaluations == [1]
    (project / "VERSION").write_text("2\n")  # same size, new content
    assert b"tool-2" in build()
    assert evaluations == [1, 1]


def test_requirements_content_is_read_by_buildkit_not_by_the_definition(
        build: Any, evaluations: list[int], project: Path) -> None:
    """pip reads requirements.txt from the context at solve time: the definition does not
    contain it, so a new content keeps the entry and the bytes equal an uncached build's."""
    first = build()
    (project / "requirements.txt").write_text("six\nattrs==23.2.0\n")
    assert build() == first == build(cache=False)
    assert b"attrs" not in first


def test_a_deleted_requirements_file_is_seen_when_evaluation_looked_at_it(
        build: Any, evaluations: list[int], project: Path) -> None:
    (project / "build.envd").write_text(BUILD + '    install.versioned(name="requirements.txt")\n')
    assert b"tool-six" in build()
    (project / "requirements.txt").write_text("attrs\n")
    assert b"tool-attrs" in build()
    assert evaluations == [1, 1]


@pytest.mark.parametrize("change", ["env", "flag", "key", "source"])
def test_other_inputs_invalidate(build: Any, evaluations: list[int], project: Path,
                                 monkeypatch: pytest.MonkeyPatch, envd_config_dir: Path,
                                 change: str) -> None:
    build("--tag", "demo:1")
    build("--tag", "demo:1")
    assert evaluations == [1]
    flags = ["--tag", "demo:1"]
    if change == "env":
        monkeypatch.setenv("ENVD_MICROMAMBA_IMAGE", "127.0.0.1:5000/other:1")
    elif change == "flag":
        flags = ["--tag", "demo:2"]
    elif change == "key":
        (envd_config_dir / "id_rsa_envd.pub").write_text("another public key\n")
    else:  # an edit of a vendor function's package (here: this test module's file)
        monkeypatch.setattr(defcache, "source_signature",
                            lambda roots: [[r, 1, 1] for r in sorted(set(roots))])
    build(*flags)
    assert evaluations == [1, 1]


def test_source_signature_moves_when_a_module_is_edited(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mod.py").write_text("x = 1\n")
    before = defcache.source_signature([str(pkg)])
    import os

    st = (pkg / "mod.py").stat()
    os.utime(pkg / "mod.py", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert defcache.source_signature([str(pkg)]) != before
    moved = defcache.source_signature([str(pkg)])
    assert moved != before
    # an edit that restores an older mtime than the newest file's (rsync -t, an archive)
    (pkg / "__init__.py").write_text("y = 2\n")
    os.utime(pkg / "__init__.py", ns=(st.st_atime_ns, st.st_mtime_ns - 10**9))
    assert defcache.source_signature([str(pkg)]) != moved
    (pkg / "new.py").write_text("")
    assert defcache.source_signature([str(pkg)])[0][2] == 3


def test_an_impure_evaluation_is_not_stored(build: Any, evaluations: list[int],
                                            project: Path) -> None:
    (project / "build.envd").write_text(BUILD + "    install.shelled()\n")
    build()
    build()
    assert evaluations == [1, 1]
    assert _entries(project) == []


def test_switched_off_nothing_is_written(build: Any, evaluations: list[int],
                                         project: Path) -> None:
    build(cache=False)
    build(cache=False)
    assert evaluations == [1, 1]
    assert _entries(project) == []


@pytest.mark.parametrize("damage", ["truncated", "not json", "wrong key", "bad base64"])
def test_a_corrupt_entry_is_a_miss_and_is_replaced(build: Any, evaluations: list[int],
                                                   project: Path, damage: str) -> None:
    first = build()
    (entry,) = _entries(project)
    text = entry.read_text()
    if damage == "truncated":
        entry.write_text(text[: len(text) // 2])
    elif damage == "not json":
        entry.write_bytes(b"\x00\xff")
    elif damage == "wrong key":
        doc = json.loads(text)
        doc["key"] = "0" * 64
        entry.write_text(json.dumps(doc))
    else:
        doc = json.loads(text)
        for b in doc["builds"].values():
            b["definition"] = "!!!"
        entry.write_text(json.dumps(doc))
    assert build() == first
    assert evaluations == [1, 1]
    assert build() == first
    assert evaluations == [1, 1]  # rewritten by the second build, used by the third


def test_the_cache_keeps_a_bounded_number_of_entries(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(defcache, "MAX_ENTRIES", 3)
    folder = tmp_path / "defs"
    folder.mkdir()
    import os

    for i in range(6):
        (folder / f"{i}.json").write_text("{}")
        os.utime(folder / f"{i}.json", ns=(i * 10**9, i * 10**9))
    defcache._prune(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["3.json", "4.json", "5.json"]


VARIANTS = st.fixed_dictionaries({
    "lib": st.sampled_from(["jq", "curl", "git"]),
    "version": st.sampled_from(["1", "2", "10"]),
    "tag": st.sampled_from(["a:1", "b:1"]),
    "env": st.sampled_from(["", "127.0.0.1:5000/mamba:1"]),
})


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(VARIANTS, min_size=2, max_size=4))
def test_property_cached_output_always_equals_an_uncached_build(
        build: Any, project: Path, monkeypatch: pytest.MonkeyPatch,
        steps: list[dict[str, str]]) -> None:
    """Any sequence of input changes: each build's bytes with the cache equal those without."""
    (project / "build.envd").write_text(BUILD + "    install.versioned()\n")
    for step in steps:
        (project / "lib" / "tools.envd").write_text(LIB.replace("jq", step["lib"]))
        (project / "VERSION").write_text(step["version"] + "\n")
        monkeypatch.setenv("ENVD_MICROMAMBA_IMAGE", step["env"])
        cached = build("--tag", step["tag"])
        assert cached == build("--tag", step["tag"], cache=False)


KEY_SCRIPT = """
import os
os.environ.pop("PYTHONHASHSEED")  # the environment is part of the key; the seed is what varies
from pathlib import Path
from envd_core.pipeline.defcache import build_key
from envd_core.testing import StubBuilder
b = StubBuilder("x", options={})
print(build_key(flags={"platform": None, "export_cache": ("a", "b")}, build_file=Path("/p/b"),
                context_dir=Path("/p"), builder=b, extra_functions={}, limit_defaults=None,
                public_key=None))
"""


def test_the_key_is_the_same_in_every_process(tmp_path: Path) -> None:
    """Builder capabilities are frozensets, whose order changes with the hash seed."""
    import os
    import sys

    keys = set()
    for seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", KEY_SCRIPT], env=env, capture_output=True,
                             text=True, check=True, cwd=tmp_path)
        keys.add(out.stdout.strip())
    assert len(keys) == 1


def test_the_first_dev_build_which_makes_the_key_pair_is_not_stored(
        build: Any, evaluations: list[int], project: Path, envd_config_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Its definition bakes a key that did not exist when the cache key was computed: stored,
    it would be reused after the pair is deleted, with a key nobody holds."""
    import envd_core.pipeline.execute as execute

    for name in ("id_rsa_envd", "id_rsa_envd.pub"):
        (envd_config_dir / name).unlink()

    def make_pair() -> str:  # what ensure_key_pair does, without a 4096-bit ssh-keygen
        (envd_config_dir / "id_rsa_envd").write_text("private\n")
        (envd_config_dir / "id_rsa_envd.pub").write_text("ssh-rsa AAAAfresh envd\n")
        return "ssh-rsa AAAAfresh envd"

    monkeypatch.setattr(execute, "_public_key", make_pair)
    monkeypatch.setenv("ENVD_SSHD_IMAGE", "127.0.0.1:5000/sshd:1")
    (project / "build.envd").write_text(BUILD.replace("dev=False", "dev=True"))
    first = build()
    assert b"AAAAfresh" in first
    assert _entries(project) == []
    assert build() == first  # evaluated again, now under a key that names the pair
    assert build() == first
    assert evaluations == [1, 1]


def test_a_second_envd_process_hits(tmp_path: Path) -> None:
    """End to end in real processes (hash seeds, sys.path, the environment differ per process
    in ways an in-process test cannot show): the second `envd build --dump-llb` skips Starlark
    and the LLB compile and writes the same bytes."""
    import os
    import sys

    envd = str(Path(sys.executable).with_name("envd"))
    proj = tmp_path / "proj"
    (proj / "lib").mkdir(parents=True)
    (proj / "build.envd").write_text(BUILD)
    (proj / "lib" / "tools.envd").write_text(LIB)
    (proj / "requirements.txt").write_text("six\n")
    env = {**os.environ, "ENVD_CONFIG_DIR": str(tmp_path / "cfg"),
           "ENVD_CACHE_DIR": str(tmp_path / "cache"), "ENVD_TIMINGS": str(tmp_path / "t.json")}
    env.pop("ENVD_EVAL_CACHE", None)
    env.pop("ENVD_CONTEXT", None)
    subprocess.run([envd, "context", "create", "--name", "t", "--builder", "tcp",
                    "--builder-address", "127.0.0.1:9", "--use"], env=env, check=True,
                   capture_output=True)
    outputs, phases = [], []
    for _ in range(2):
        subprocess.run([envd, "build", "--dump-llb", str(tmp_path / "out.llb")], cwd=proj,
                       env=env, check=True, capture_output=True)
        outputs.append((tmp_path / "out.llb").read_bytes())
        phases.append(set(json.loads((tmp_path / "t.json").read_text())["phases"]))
    assert "starlark" in phases[0] and "llb" in phases[0]
    assert "starlark" not in phases[1] and "llb" not in phases[1]
    assert outputs[0] == outputs[1]


# ------------------------------------------------------------------ the review's attacks
def test_a_file_edited_while_the_build_runs_is_not_trusted(
        build: Any, evaluations: list[int], project: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The evaluation read VERSION=1; the user saves VERSION=2 before the entry is written.
    Fingerprints taken at store time would describe 2 next to a definition built from 1, and
    every later build would reuse it."""
    (project / "build.envd").write_text(BUILD + "    install.versioned()\n")
    real = defcache.DefinitionCache.evaluated

    def evaluated_then_edit(self: Any, graph: Any, reads: Any) -> None:
        real(self, graph, reads)
        (project / "VERSION").write_text("2\n")  # an editor's save, mid-build

    monkeypatch.setattr(defcache.DefinitionCache, "evaluated", evaluated_then_edit)
    assert b"tool-1" in build()
    monkeypatch.setattr(defcache.DefinitionCache, "evaluated", real)
    assert b"tool-2" in build()
    assert build() == build(cache=False)


def test_a_file_deleted_while_the_build_runs_is_not_trusted(
        build: Any, evaluations: list[int], project: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    (project / "build.envd").write_text(
        BUILD + '    install.versioned(name="requirements.txt")\n')
    real = defcache.DefinitionCache.evaluated

    def evaluated_then_delete(self: Any, graph: Any, reads: Any) -> None:
        real(self, graph, reads)
        (project / "requirements.txt").unlink()

    monkeypatch.setattr(defcache.DefinitionCache, "evaluated", evaluated_then_delete)
    assert b"tool-six" in build()
    monkeypatch.setattr(defcache.DefinitionCache, "evaluated", real)
    with pytest.raises(AssertionError):  # evaluated again, it fails: the file is gone
        build()
    assert _entries(project) == []


def test_an_entry_whose_reads_were_damaged_is_a_miss(
        build: Any, evaluations: list[int], project: Path) -> None:
    """The checksum covers the recorded reads too: an entry that lost them would match any
    state of the files."""
    (project / "build.envd").write_text(BUILD + "    install.versioned()\n")
    build()
    (entry,) = _entries(project)
    doc = json.loads(entry.read_text())
    doc["reads"] = []
    entry.write_text(json.dumps(doc))
    (project / "VERSION").write_text("2\n")
    assert b"tool-2" in build()


def test_a_large_file_rewritten_with_its_old_mtime_is_seen(
        build: Any, evaluations: list[int], project: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Above HASH_LIMIT a file is fingerprinted by its metadata: same size, same inode and
    the old mtime put back (``touch -d``, ``rsync -t``) must still show, through the ctime."""
    import os

    from envd_core.pipeline import fingerprints

    monkeypatch.setattr(fingerprints, "HASH_LIMIT", 0)
    (project / "build.envd").write_text(BUILD + "    install.versioned()\n")
    assert b"tool-1" in build()
    before = (project / "VERSION").stat()
    with open(project / "VERSION", "r+") as fh:  # in place: the inode stays
        fh.write("2\n")
    os.utime(project / "VERSION", ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (project / "VERSION").stat().st_ino == before.st_ino
    assert b"tool-2" in build()


def test_an_entry_that_turned_into_a_folder_is_seen(
        build: Any, evaluations: list[int], project: Path) -> None:
    """A listing's names alone miss a file replaced by a folder of the same name, which
    ``os.walk``, ``glob`` and ``is_dir()`` on scandir entries tell apart."""
    (project / "build.envd").write_text(BUILD + "    install.dirs()\n")
    (project / "data").write_text("")
    assert b"dir-data" not in build()
    (project / "data").unlink()
    (project / "data").mkdir()
    assert b"dir-data" in build()


def test_a_relative_path_through_a_symlink_and_dotdot_is_fingerprinted_where_it_led(
        build: Any, evaluations: list[int], project: Path) -> None:
    """``link/../VERSION`` with ``link`` a symlink opens ``<link's target>/../VERSION``; the
    lexically normalised ``<project>/VERSION`` is another file."""
    other = project.parent / "other"
    (other / "sub").mkdir(parents=True)
    (other / "VERSION").write_text("7\n")
    (project / "link").symlink_to(other / "sub")
    (project / "build.envd").write_text(BUILD + '    install.versioned(name="link/../VERSION")\n')
    assert b"tool-7" in build()
    (other / "VERSION").write_text("8\n")
    assert b"tool-8" in build()


def test_a_python_file_a_vendor_function_reads_is_recorded(
        build: Any, evaluations: list[int], project: Path) -> None:
    """Imports are not recorded (the code is keyed by its signature), but a ``.py`` file read
    as data (``version.py``, ``setup.py``) is an input like any other."""
    (project / "version.py").write_text("1\n")
    (project / "build.envd").write_text(BUILD + '    install.versioned(name="version.py")\n')
    assert b"tool-1" in build()
    (project / "version.py").write_text("2\n")
    assert b"tool-2" in build()


@pytest.mark.parametrize("call", ["install.random()", 'install.versioned(name="/proc/uptime")',
                                  "install.hostname()"])
def test_reading_a_device_or_proc_file_is_impure(build: Any, evaluations: list[int],
                                                 project: Path, call: str) -> None:
    """Their content (the host's name) is not a function of the files: such an evaluation is
    never stored."""
    (project / "build.envd").write_text(BUILD + f"    {call}\n")
    build()
    assert _entries(project) == []


def test_a_link_read_with_readlink_is_recorded(tmp_path: Path) -> None:
    import os

    from envd_core.envdfile.lang import reads as reads_mod

    (tmp_path / "a").symlink_to("target")
    saved = os.stat, os.lstat, os.readlink
    try:
        value, got = reads_mod.record(lambda: os.readlink(tmp_path / "a"))
    finally:
        os.stat, os.lstat, os.readlink = saved
    assert value == "target"
    assert str(tmp_path / "a") in got.lstat
    assert "target" in defcache.fingerprints(got.as_lists())[0][2]


def _key(functions: dict[str, Any]) -> str:
    from envd_core.testing import StubBuilder

    return defcache.build_key(flags={}, build_file=Path("/p/build.envd"), context_dir=Path("/p"),
                              builder=StubBuilder("x", options={}), extra_functions=functions,
                              limit_defaults=None, public_key=None)


def _made_by_a_hook(mirror: str) -> Any:
    """What an ``envd_build_functions`` hook returns after reading its settings (in the
    parent, where nothing is recorded): the same qualified name, another captured value."""
    def mirror_fn(graph: Any, suite: str = mirror) -> None:
        graph.apt_sources.append(f"deb {mirror} {suite}")

    return mirror_fn


def test_what_a_vendor_function_captured_is_in_the_key() -> None:
    import functools

    assert _key({"corp.mirror": _made_by_a_hook("a")}) == _key(
        {"corp.mirror": _made_by_a_hook("a")})
    assert _key({"corp.mirror": _made_by_a_hook("a")}) != _key(
        {"corp.mirror": _made_by_a_hook("b")})
    assert _key({"corp.v": functools.partial(_read_version, name="A")}) != _key(
        {"corp.v": functools.partial(_read_version, name="B")})


def test_an_editable_helper_module_imported_by_the_parent_is_in_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A vendor function's helpers may live in another editable package than its own."""
    import importlib
    import os

    (tmp_path / "corp_helper_a.py").write_text("MIRROR = 'a'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("corp_helper_a")
    try:
        before = _key({})
        st = (tmp_path / "corp_helper_a.py").stat()
        (tmp_path / "corp_helper_a.py").write_text("MIRROR = 'b'\n")
        os.utime(tmp_path / "corp_helper_a.py", ns=(st.st_atime_ns, st.st_mtime_ns))
        assert _key({}) != before  # same size, same mtime: the ctime moved
    finally:
        import sys

        sys.modules.pop("corp_helper_a", None)


def _uses_a_helper(graph: Any) -> None:
    """A vendor function importing its helper when called (in the evaluation child only)."""
    import corp_helper_b  # type: ignore[import-not-found]

    graph.apt_packages.append("helper-" + corp_helper_b.MIRROR)


def test_an_editable_helper_module_imported_by_the_evaluation_is_recorded(
        cli: Any, register_plugin: Any, project: Path, tmp_path: Path, evaluations: list[int],
        monkeypatch: pytest.MonkeyPatch) -> None:
    helpers = tmp_path / "helpers"  # a folder of its own: nothing else changes its mtime
    helpers.mkdir()
    (helpers / "corp_helper_b.py").write_text("MIRROR = 'a'\n")
    monkeypatch.syspath_prepend(str(helpers))
    monkeypatch.setattr("sys.dont_write_bytecode", True)
    register_plugin(make_plugin(builders=[StubBuilder], runners=[StubRunner],
                                build_functions={"install.helped": _uses_a_helper}))
    assert cli("context", "create", "--name", "stub", "--builder", StubBuilder.name,
               "--builder-address", "x", "--runner", StubRunner.name, "--use").exit_code == 0
    (project / "build.envd").write_text(BUILD + "    install.helped()\n")
    out = project.parent / "out.llb"

    def build() -> bytes:
        assert cli("build", "--dump-llb", str(out)).exit_code == 0
        return out.read_bytes()

    assert b"helper-a" in build()
    assert b"helper-a" in build()
    assert evaluations == [1]  # a hit
    (helpers / "corp_helper_b.py").write_text("MIRROR = 'b'\n")
    assert b"helper-b" in build()


@pytest.mark.parametrize("ref", ["", ', ref="v1"'])
def test_an_include_from_git_is_never_stored(build: Any, evaluations: list[int], project: Path,
                                             tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             ref: str) -> None:
    """Without ``ref`` the branch may have moved; with one, a tag is looked up with git in
    the mirror: both run git, so both evaluations are impure."""
    monkeypatch.setenv("ENVD_INCLUDE_CACHE", str(tmp_path / "includes"))
    repo = tmp_path / "envdlib"
    repo.mkdir()
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-qm", "v1"],
                 ["tag", "v1"]):
        if args[0] == "add":
            (repo / "lib.envd").write_text('def pkgs():\n    install.apt_packages(["from-git"])\n')
        subprocess.run(["git", *args], cwd=repo, env=env, check=True)
    (project / "build.envd").write_text(
        f'lib = include(git="file://{repo}"{ref})\n'
        + BUILD.split("\n", 1)[1].replace("    tools()\n", "    lib.pkgs()\n"))
    assert b"from-git" in build()
    assert b"from-git" in build()
    assert evaluations == [1, 1]
    assert _entries(project) == []


def test_an_unwritable_cache_folder_does_not_fail_the_build(
        build: Any, evaluations: list[int], project: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache folder cannot be made (a file stands in its way; chmod means nothing to
    root, who runs CI): every build still works, without the cache."""
    blocker = project.parent / "blocker"
    blocker.write_text("")
    monkeypatch.setenv("ENVD_CACHE_DIR", str(blocker / "cache"))
    first = build()
    assert build() == first == build(cache=False)
    assert evaluations == [1, 1, 1]


def test_a_full_disk_does_not_fail_the_build(build: Any, evaluations: list[int], project: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    import envd_core.atomic

    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(envd_core.atomic, "write_atomic", full)
    first = build()
    assert build() == first
    assert evaluations == [1, 1]
    assert _entries(project) == []


def test_a_path_that_did_not_exist_is_recorded_too(build: Any, evaluations: list[int],
                                                   project: Path) -> None:
    (project / "build.envd").write_text(BUILD + "    install.if_present()\n")
    assert b"extra-present" not in build()
    assert b"extra-present" not in build()
    assert evaluations == [1]
    (project / "EXTRA").write_text("")
    assert b"extra-present" in build()


def test_a_loaded_file_behind_a_symlink_that_is_repointed(build: Any, evaluations: list[int],
                                                          project: Path) -> None:
    (project / "lib" / "a.envd").write_text(LIB)
    (project / "lib" / "b.envd").write_text(LIB.replace("jq", "curl"))
    (project / "lib" / "tools.envd").unlink()
    (project / "lib" / "tools.envd").symlink_to("a.envd")
    assert b"jq" in build()
    (project / "lib" / "tools.envd").unlink()
    (project / "lib" / "tools.envd").symlink_to("b.envd")
    assert b"curl" in build()
    assert build() == build(cache=False)


SETTINGS = {"mirror": "a"}  # what a plugin would load from its settings file when imported


def _uses_settings(graph: Any) -> None:
    graph.apt_sources.append(_mirror_line())


def _mirror_line() -> str:
    return f"deb {SETTINGS['mirror']} stable"


def test_module_settings_a_vendor_function_uses_are_in_the_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Loaded when the plugin was imported, in envd's process: nothing records that read, so
    the key holds the data the function (and its helpers) name."""
    before = _key({"corp.mirror": _uses_settings})
    assert _key({"corp.mirror": _uses_settings}) == before
    monkeypatch.setitem(SETTINGS, "mirror", "b")
    assert _key({"corp.mirror": _uses_settings}) != before


def test_package_data_read_through_the_loader_is_recorded(tmp_path: Path) -> None:
    """``pkgutil.get_data`` opens through the import system's loader: only the code it loads
    is left out, a data file it reads is recorded."""
    import os
    import pkgutil
    import sys

    from envd_core.envdfile.lang import reads as reads_mod

    pkg = tmp_path / "corp_data_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "mirrors.json").write_text("{}")
    sys.path.insert(0, str(tmp_path))
    saved = os.stat, os.lstat, os.readlink
    try:
        _, got = reads_mod.record(lambda: pkgutil.get_data("corp_data_pkg", "mirrors.json"))
    finally:
        os.stat, os.lstat, os.readlink = saved
        sys.path.remove(str(tmp_path))
        sys.modules.pop("corp_data_pkg", None)
    assert str(pkg / "mirrors.json") in got.opened
    assert not any(p.endswith((".py", ".pyc")) for p in got.opened)
    assert str(pkg / "__init__.py") in got.imported


def test_editable_roots_are_top_level_packages_and_namespace_portions(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The key signs the directory of each editable top-level package (a submodule adds no
    root of its own), each editable portion of a namespace package, and nothing installed."""
    import importlib
    import sys

    pkg = tmp_path / "lead_editable_pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    portion = tmp_path / "lead_ns_pkg" / "part"
    portion.mkdir(parents=True)
    (portion / "__init__.py").write_text("")
    (tmp_path / "lead_single.py").write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("lead_editable_pkg.sub", "lead_ns_pkg.part", "lead_single"):
        importlib.import_module(name)
    try:
        roots = defcache.editable_roots()
    finally:
        for name in ("lead_editable_pkg", "lead_editable_pkg.sub", "lead_ns_pkg",
                     "lead_ns_pkg.part", "lead_single"):
            sys.modules.pop(name, None)
    assert str(pkg) in roots
    assert str(pkg / "sub") not in roots
    assert str(tmp_path / "lead_ns_pkg") in roots  # the namespace package's only portion
    assert str(tmp_path / "lead_single.py") in roots
    assert not any("/site-packages/" in root for root in roots)
    assert all(not root.endswith("/bin/envd") for root in roots)  # __main__ is left out
