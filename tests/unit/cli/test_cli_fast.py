"""The fast path of ``envd context ls/show/use`` (envd_core.cli.fast) and the plugin index.

Each run is a fresh interpreter through ``envd_core.cli.main`` (the console script's entry), so
what is imported is what a user's ``envd`` imports. The full CLI's output is the reference: the
fast path must print the same bytes, or decline.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from envd_core.cli.fast import HINT_MARKER, _parse
from envd_core.contexts.upstream import HINT_MARKER as UPSTREAM_HINT_MARKER

SLOW = ("click", "pluggy", "attrs", "attr")

PROBE = """
    import json, sys
    from envd_core._entrypoints import entry_points
    mode, report_path, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    sys.argv = ["envd", *args]
    code = 0
    try:
        if mode == "full":
            from envd_core.cli.app import main
            main(args)
        else:
            from envd_core.cli import main
            main()
    except SystemExit as exc:
        code = exc.code or 0
    eps = entry_points("envd")
    report = {
        "code": code,
        "slow": sorted({m.split(".")[0] for m in sys.modules} & set(%r)),
        "plugins": sorted(ep.name for ep in eps if ep.value.split(":")[0] in sys.modules),
    }
    with open(report_path, "w") as out:
        json.dump(report, out)
"""

PLUGIN = '''
from envd_core.hookspecs import hookimpl
from envd_core.builder import Builder

class ThrowawayBuilder(Builder):
    name = "throwaway"
    summary = "a builder type for the fast-path tests"
    def parse_address(self, address): return address
    def connect(self, timeout=None): raise NotImplementedError

@hookimpl
def envd_builder_types():
    return [ThrowawayBuilder]
'''

TEAM_PLUGIN = '''
from envd_core.hookspecs import hookimpl
from envd_core.contexts.model import Context

@hookimpl
def envd_team_contexts():
    return [Context(name="vendor-farm", builder="tcp", builder_address="farm:1234")]
'''


class Env:
    """A throwaway HOME, config dir, cache dir and plugin directory for ``envd`` runs."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.script = tmp / "probe.py"
        self.script.write_text(textwrap.dedent(PROBE % (SLOW,)))
        self.site = tmp / "site"
        self.site.mkdir()
        self.env = {
            "PATH": "/usr/bin:/bin", "HOME": str(tmp / "home"), "LANG": "C.UTF-8",
            "ENVD_CONFIG_DIR": str(tmp / "cfg"), "ENVD_CACHE_DIR": str(tmp / "cache"),
            "ENVD_TEAM_CONTEXTS_DIR": str(tmp / "team"), "PYTHONPATH": str(self.site),
            "ENVD_RESIDENT": "0",  # the probe inspects this process's imports
        }
        (tmp / "home").mkdir()

    def add_plugin(self, name: str, source: str, *, editable: bool = False) -> Path:
        """Install a plugin distribution the way pip does: a module and a dist-info folder
        (with ``editable``, the ``direct_url.json`` pip writes for ``pip install -e``)."""
        module = self.site / f"{name}.py"
        module.write_text(source)
        info = self.site / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n\n")
        (info / "entry_points.txt").write_text(f"[envd]\n{name} = {name}\n")
        if editable:
            (info / "direct_url.json").write_text(json.dumps(
                {"url": f"file://{self.tmp}", "dir_info": {"editable": True}}))
        return module

    def run(self, *args: str, mode: str = "main", **extra: str) -> tuple[dict[str, Any], str, str]:
        report = self.tmp / "report.json"
        done = subprocess.run(
            [sys.executable, str(self.script), mode, str(report), *args],
            env={**self.env, **extra}, cwd=self.tmp, capture_output=True, text=True,
            timeout=120, check=False,
        )
        assert report.exists(), done.stderr
        return json.loads(report.read_text()), done.stdout, done.stderr

    def fast(self, *args: str, **extra: str) -> bool:
        """Whether ``envd ARGS`` ran on the fast path (click never imported)."""
        report, _out, _err = self.run(*args, **extra)
        return "click" not in report["slow"]


@pytest.fixture
def env(tmp_path: Path) -> Env:
    e = Env(tmp_path)
    e.add_plugin("envd_fastpath_throwaway", PLUGIN)
    # the store exists (the first run seeds it through the plugins, on the full path)
    e.run("context", "create", "--name", "remote", "--builder", "tcp",
          "--builder-address", "127.0.0.1:1234", "--runner-address", "unix:///r.sock")
    e.run("context", "create", "--name", "gone", "--builder", "throwaway",
          "--builder-address", "x")
    return e


def test_second_run_is_fast_and_imports_nothing_slow(env: Env) -> None:
    env.run("context", "ls")  # writes the index
    report, out, _ = env.run("context", "ls")
    assert report["code"] == 0
    assert report["slow"] == [], f"the fast path imported {report['slow']}"
    assert report["plugins"] == [], f"the fast path imported plugins {report['plugins']}"
    assert "remote" in out and "tcp://127.0.0.1:1234" in out


CASES = [
    ["context", "ls"],
    ["context", "ls", "--format", "json"],
    ["context", "ls", "-fjson"],
    ["context", "ls", "--format=table"],
    ["context", "show"],
    ["context", "show", "-f", "json"],
    ["--context", "remote", "context", "show"],
]


@pytest.mark.parametrize("args", CASES, ids=" ".join)
def test_fast_output_is_the_full_clis(env: Env, args: list[str]) -> None:
    team = env.tmp / "team"
    team.mkdir()
    (team / "corp.json").write_text(json.dumps({
        "format": "envd-team-contexts/v1",
        "contexts": [{"name": "farm", "builder": {"type": "kube-pod", "address": "ns/x"}}],
    }))
    env.run(*args)  # index
    full, full_out, full_err = env.run(*args, mode="full")
    report, out, err = env.run(*args)
    assert "click" not in report["slow"], "expected the fast path"
    assert (report["code"], out, err) == (full["code"], full_out, full_err)
    assert out.strip()


#: pip's console-script stub for ``envd = "envd_core.cli:main"`` (what ``pip install`` writes).
CONSOLE_SCRIPT = """#!{python}
# -*- coding: utf-8 -*-
import re
import sys
from envd_core.cli import main
if __name__ == '__main__':
    sys.argv[0] = re.sub(r'(-script\\.pyw|\\.exe)?$', '', sys.argv[0])
    sys.exit(main())
"""
#: A sitecustomize whose object says, when the interpreter's teardown frees it, that it ran.
TEARDOWN_MARKER = """
import builtins, os
class _Marker:
    def __del__(self, write=os.write):
        write(2, b"teardown\\n")
builtins._envd_teardown_marker = _Marker()
"""


def console_script(env: Env) -> Path:
    """The console script, its plugin index written (its folder is on its ``sys.path``)."""
    script = env.tmp / "bin" / "envd"
    script.parent.mkdir(exist_ok=True)
    script.write_text(CONSOLE_SCRIPT.format(python=sys.executable))
    script.chmod(0o755)
    subprocess.run([str(script), "context", "ls"], env=env.env, capture_output=True,
                   timeout=120, check=True)
    return script


def test_the_console_script_skips_the_teardown_on_the_fast_path(env: Env) -> None:
    (env.site / "sitecustomize.py").write_text(TEARDOWN_MARKER)
    script = console_script(env)
    _, full_out, _ = env.run("context", "ls", mode="full")
    fast = subprocess.run([str(script), "context", "ls"], env=env.env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert (fast.returncode, fast.stdout, fast.stderr) == (0, full_out, "")
    # the same script on the full path (--debug declines the fast one) tears down as usual
    full = subprocess.run([str(script), "context", "ls"], env={**env.env, "ENVD_DEBUG": "1"},
                          capture_output=True, text=True, timeout=120, check=False)
    assert (full.returncode, full.stdout) == (0, full_out)
    assert full.stderr.endswith("teardown\n")


def test_an_atexit_callback_keeps_the_teardown(env: Env) -> None:
    (env.site / "sitecustomize.py").write_text(TEARDOWN_MARKER + textwrap.dedent("""
        import atexit, sys
        atexit.register(lambda: os.write(2, b"atexit, click %d\\n" % ("click" in sys.modules)))
    """))
    script = console_script(env)
    _, full_out, _ = env.run("context", "ls", mode="full")
    done = subprocess.run([str(script), "context", "ls"], env=env.env, capture_output=True,
                          text=True, timeout=120, check=False)
    # served fast (click never imported), then the callback and the teardown both ran
    assert (done.returncode, done.stdout) == (0, full_out)
    assert done.stderr == "atexit, click 0\nteardown\n"


def test_an_embedding_process_keeps_its_teardown(env: Env) -> None:
    (env.site / "sitecustomize.py").write_text(TEARDOWN_MARKER)
    env.run("context", "ls")
    # the probe calls envd_core.cli.main() itself, then writes its report: it must get back
    report, out, err = env.run("context", "ls")
    assert report["code"] == 0 and "click" not in report["slow"]
    assert "(current)" in out and err == "teardown\n"


def test_uninstalled_type_shown_as_the_full_cli_does(env: Env) -> None:
    off = {"ENVD_DISABLE_PLUGINS": "envd_fastpath_throwaway"}
    env.run("context", "ls", **off)  # the index for this set of plugins
    _, full_out, _ = env.run("context", "ls", mode="full", **off)
    report, out, _ = env.run("context", "ls", **off)
    assert "click" not in report["slow"]
    # the plugin is switched off: its builder type is "not installed", on either path
    assert "throwaway (not installed)" in out
    assert out == full_out


def test_use_on_the_fast_path_changes_the_store(env: Env) -> None:
    env.run("context", "ls")
    report, _out, err = env.run("context", "use", "remote")
    assert report["code"] == 0 and "click" not in report["slow"]
    assert err == 'Current context is "remote"\n'
    stored = json.loads((env.tmp / "cfg" / "contexts.json").read_text())
    assert stored["current"] == "remote"
    report, _out, err = env.run("context", "use", "--name", "nope")
    # an error goes to the full CLI, which reports it its own way; nothing is written
    assert report["code"] == 1 and "click" in report["slow"]
    assert 'context "nope" does not exist' in err
    assert json.loads((env.tmp / "cfg" / "contexts.json").read_text())["current"] == "remote"


def test_a_changed_plugin_invalidates_the_index(env: Env) -> None:
    module = env.add_plugin("envd_fastpath_editable", PLUGIN.replace('"throwaway"', '"ed"'),
                            editable=True)
    env.run("context", "ls")
    assert env.fast("context", "ls")
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert not env.fast("context", "ls"), "an edited plugin must send the run to the full CLI"
    assert env.fast("context", "ls"), "the full run wrote a fresh index"


def test_a_wheel_plugins_files_are_not_walked(env: Env) -> None:
    # installed from a wheel: its code changes only with its dist-info (and so its directory)
    module = env.site / "envd_fastpath_throwaway.py"
    env.run("context", "ls")
    assert env.fast("context", "ls")
    stat = module.stat()
    os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert env.fast("context", "ls")


def test_plugin_settings_written_invalidate_the_index(env: Env) -> None:
    env.run("context", "ls")
    assert env.fast("context", "ls")
    env.run("plugins", "disable", "envd_fastpath_throwaway")
    assert not env.fast("context", "ls"), "plugins.json changed: the full CLI reads it"
    report, out, _ = env.run("context", "ls")
    assert "click" not in report["slow"] and "throwaway (not installed)" in out


def test_an_installed_plugin_invalidates_the_index(env: Env) -> None:
    env.run("context", "ls")
    assert env.fast("context", "ls")
    env.add_plugin("envd_fastpath_second", PLUGIN.replace('"throwaway"', '"second"'))
    assert not env.fast("context", "ls")
    report, _out, _ = env.run("context", "ls")
    assert "click" not in report["slow"] and "envd_fastpath_second" not in report["plugins"]


def test_switches_change_what_is_enabled(env: Env) -> None:
    env.run("context", "ls")
    assert env.fast("context", "ls")
    assert not env.fast("context", "ls", ENVD_PLUGINS="tcp")  # another plugin set: stale
    assert not env.fast("context", "ls", ENVD_CONTEXT_STORE="sqlite")
    assert not env.fast("context", "ls", ENVD_DEBUG="1")


def test_a_team_context_plugin_keeps_the_full_path(env: Env) -> None:
    env.add_plugin("envd_fastpath_team", TEAM_PLUGIN)
    env.run("context", "ls")
    report, out, _ = env.run("context", "ls")
    assert "click" in report["slow"]
    assert "vendor-farm" in out


def test_upstream_import_hint_is_the_full_clis(tmp_path: Path) -> None:
    env = Env(tmp_path)
    env.run("context", "ls")  # store with `default` only, and the index
    upstream = env.tmp / "home" / ".config" / "envd"
    upstream.mkdir(parents=True)
    (upstream / "contexts").write_bytes(b"")
    report, _out, err = env.run("context", "ls")
    assert "click" in report["slow"], "the hint is due: the full CLI prints it"
    assert "envd context import --from-upstream" in err
    assert (env.tmp / "cfg" / HINT_MARKER).exists()
    report, _out, err = env.run("context", "ls")
    assert "click" not in report["slow"] and err == ""


def test_hint_marker_is_upstreams() -> None:
    assert HINT_MARKER == UPSTREAM_HINT_MARKER


@pytest.mark.parametrize("argv", [
    ["context", "ls", "--status"], ["context", "ls", "--help"], ["context", "ls", "-f", "yaml"],
    ["context", "use"], ["context", "use", "a", "b"], ["context", "rm", "a"], ["build"],
    ["context"], ["--debug", "context", "ls"], ["--context", "--x", "context", "show"],
])
def test_parse_declines_what_it_does_not_serve(argv: list[str]) -> None:
    assert _parse(argv) is None


def test_parse_reads_what_it_serves() -> None:
    assert _parse(["context", "use", "--name=a"]) == ("use", "table", "a", None)
    assert _parse(["--context=x", "context", "show", "-fjson"]) == ("show", "json", None, "x")


def test_parse_reads_envs_ls() -> None:
    assert _parse(["envs", "ls"]) == ("envs", "table", None, None)
    assert _parse(["--context", "c", "envs", "list", "-f", "json"]) == ("envs", "json", None, "c")
    assert _parse(["envs", "ls", "--all"]) is None
    assert _parse(["envs", "describe"]) is None


def test_listing_labels_are_the_environments_own() -> None:
    from envd_core.environments import names
    from envd_core.listing import LABEL_CUDA, LABEL_CUDNN, LABEL_GPU, LABEL_JUPYTER_ADDRESS

    assert (LABEL_GPU, LABEL_CUDA, LABEL_CUDNN, LABEL_JUPYTER_ADDRESS) == (
        names.LABEL_GPU, names.LABEL_CUDA, names.LABEL_CUDNN, names.LABEL_JUPYTER_ADDRESS)
    assert names.ssh_host("x") == "x.envd"  # what render.environment_row writes


def test_listing_statuses_are_the_records_own() -> None:
    from envd_core.environment import EnvironmentStatus
    from envd_core.listing import STATUSES, status_word

    assert {s.value for s in EnvironmentStatus} == STATUSES
    for word in ("Running", " exited", "removing", "", None):
        assert status_word(word) == EnvironmentStatus.parse(word).value


def test_listed_environment_round_trips_the_record() -> None:
    import datetime as dt

    from envd_core.environment import Endpoint, Environment, EnvironmentStatus, PublishedPort
    from envd_core.listing import from_environment

    env = Environment(name="e", image="i:1", status=EnvironmentStatus.PAUSED, runner="r",
                      id="abc", created=dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc),
                      ports=(PublishedPort(2222, 40000, "127.0.0.1", "tcp", "ssh"),),
                      labels={"k": "v"}, ssh=Endpoint("127.0.0.1", 40000))
    assert from_environment(env).to_environment("r") == env


def test_httplite_reads_chunked_and_sized_answers() -> None:
    import socket
    import threading

    from envd_core import httplite

    answers = [
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
         b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nTrailer: t\r\n\r\n"),
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.0 200 OK\r\n\r\nuntil eof",
        b"SSH-2.0-OpenSSH_9.2\r\n",
    ]
    got = []
    for answer in answers:
        ours, theirs = socket.socketpair()
        request: list[bytes] = []

        def serve(sock: socket.socket = theirs, data: bytes = answer,
                  seen: list[bytes] = request) -> None:
            seen.append(sock.recv(65536))
            sock.sendall(data)
            sock.close()

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            response = httplite.request(ours, "GET", "/x?y=1", host="h",
                                        headers={"Accept": "application/json"})
            got.append((response.status, response.body))
        except httplite.ProtocolError as exc:
            got.append((0, str(exc).encode()))
        thread.join()
        assert request[0].startswith(b"GET /x?y=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n")
    assert got[:3] == [(200, b"hello world"), (404, b"{}"), (200, b"until eof")]
    assert got[3][0] == 0 and b"not an HTTP answer" in got[3][1]


JSON_CASES = ['{"a": [1, 2.5, null, true, "x\\u00e9"]}', " [] ", "", "  ", '{"a":1} x', '{"a":',
              "NaN", "[Infinity, -Infinity]", "\ufeff{}", '{"a": 1}\n\n', '"\\ud800"', "1 2",
              '{"a":1,}', "[1,\n2", '{"k": 1e400}', "-0", '{"a"  :  {"b":[]}}  \t\n']


@pytest.mark.parametrize("text", JSON_CASES)
def test_jsonread_is_json_loads(text: str) -> None:
    from envd_core.jsonread import loads

    def outcome(parse: Any) -> tuple[Any, ...]:
        try:
            return ("value", repr(parse(text)))
        except json.JSONDecodeError as exc:
            return ("error", str(exc), exc.pos)

    assert outcome(loads) == outcome(json.loads)
