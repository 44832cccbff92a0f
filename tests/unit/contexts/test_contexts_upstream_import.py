"""``envd context import --from-upstream`` and the first-run hint, on files written by the real
upstream envd v1.3.4 binary (see ``test_contexts_gob.py`` for where ``data/upstream/`` came from).

Plugins here are stand-ins for tcp, unix, moby-worker and docker (core tests never import the
plugin packages); docker-container, kube-pod and the envd-server runner are left uninstalled, as
on a machine without those packages.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from _gob_writer import CONTEXT_FIELDS, STRING, envd_contexts

from envd_core.builder import Builder
from envd_core.contexts.model import Context
from envd_core.testing import EnvdCli, StubRunner, assert_one_error, make_plugin

DATA = Path(__file__).parent / "data" / "upstream"
UPSTREAM_KEYS = ("context", "builder", "builder_addr", "runner", "runner_addr", "current")


class _Fake(Builder):
    address_help = "an address"

    def connect(self, *, timeout: float) -> Any:
        raise NotImplementedError


class TcpLike(_Fake):
    name = "tcp"


class UnixLike(_Fake):
    name = "unix"


class MobyLike(_Fake):
    name = "moby-worker"
    default_address = "envd_buildkitd"


class DockerLike(StubRunner):
    name = "docker"


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, envd_config_dir: Path) -> Path:
    """An isolated HOME; upstream's store goes in ``home/.config/envd/contexts``."""
    home = tmp_path / "home"
    (home / ".config" / "envd").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def up(cli: EnvdCli, register_plugin: Any, home: Path) -> EnvdCli:
    register_plugin(make_plugin(builders=[TcpLike, UnixLike, MobyLike], runners=[DockerLike]),
                    name="fakes")
    return cli


def put_upstream(home: Path, content: bytes | str) -> Path:
    target = home / ".config" / "envd" / "contexts"
    if isinstance(content, str):
        shutil.copyfile(DATA / content, target)
    else:
        target.write_bytes(content)
    return target


def ls_json(cli: EnvdCli) -> list[dict[str, Any]]:
    result = cli("context", "ls", "--format", "json")
    assert result.exit_code == 0, result
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def report(cli: EnvdCli, *args: str) -> dict[str, Any]:
    result = cli("context", "import", "--from-upstream", "--format", "json", *args)
    assert result.exit_code == 0, result
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def test_import_agrees_with_upstreams_own_listing(up, home):
    source = put_upstream(home, "every-type.gob")
    result = up("context", "import", "--from-upstream", "--use")
    assert result.exit_code == 0, result
    expected = json.loads((DATA / "every-type.ls.json").read_text())
    ours = ls_json(up)
    assert [{k: row[k] for k in UPSTREAM_KEYS if k in row} for row in ours] == expected
    installed = {row["context"]: row["installed"] for row in ours}
    assert installed == {"default": True, "tcp-ctx": True, "unix-ctx": True, "dc-ctx": False,
                         "kube-ctx": False, "moby-ctx": True, "server-ctx": False}
    assert "Current context is \"kube-ctx\"" in result.stderr
    # imported anyway, and marked with the package to install
    rows = {line.split()[0]: line for line in result.stdout.splitlines()[1:]}
    assert "imported" in rows["kube-ctx"] and "`pip install envd-kube-pod`" in rows["kube-ctx"]
    assert "`pip install envd-server-runner`" in rows["server-ctx"]
    assert "unchanged" in rows["default"]
    assert source.read_bytes() == (DATA / "every-type.gob").read_bytes()


def test_import_twice_doubles_nothing_and_writes_nothing(up, home, envd_config_dir):
    put_upstream(home, "every-type.gob")
    first = report(up, "--use")
    assert first["counts"] == {"imported": 6, "unchanged": 1, "skipped": 0}
    assert first["current"] == {"upstream": "kube-ctx", "action": "switched"}
    store = envd_config_dir / "contexts.json"
    before = (store.read_bytes(), store.stat().st_mtime_ns)
    listed = ls_json(up)
    second = report(up, "--use")
    assert second["counts"] == {"imported": 0, "unchanged": 7, "skipped": 0}
    assert {c["action"] for c in second["contexts"]} == {"unchanged"}
    assert second["current"]["action"] == "unchanged"
    assert ls_json(up) == listed
    assert (store.read_bytes(), store.stat().st_mtime_ns) == before


def test_dry_run_reports_and_changes_nothing(up, home, envd_config_dir):
    put_upstream(home, "every-type.gob")
    dry = up("context", "import", "--from-upstream", "--dry-run", "--use")
    assert dry.exit_code == 0, dry
    assert "would be imported" in dry.stdout
    assert "dry run: nothing was written" in dry.stderr
    assert 'Current context would be "kube-ctx"' in dry.stderr
    assert not (envd_config_dir / "contexts.json").exists()
    planned = report(up, "--dry-run")
    assert planned["dry_run"] is True and planned["counts"]["imported"] == 6
    assert [row["context"] for row in ls_json(up)] == ["default"]


def test_a_different_context_of_the_same_name_is_skipped_not_overwritten(up, home):
    assert up("context", "create", "--name", "kube-ctx", "--builder", "tcp",
              "--builder-address", "h:1").exit_code == 0
    put_upstream(home, "every-type.gob")
    got = report(up, "--use")
    (kube,) = [c for c in got["contexts"] if c["context"] == "kube-ctx"]
    assert kube["action"] == "skipped"
    assert "a different context `kube-ctx` exists here (tcp://h:1)" in kube["reason"]
    assert "envd context create --name kube-ctx-upstream --builder kube-pod" in kube["reason"]
    assert got["current"] == {"upstream": "kube-ctx", "action": "not-switched",
                              "reason": "`kube-ctx` was skipped"}
    (row,) = [r for r in ls_json(up) if r["context"] == "kube-ctx"]
    assert row["builder_addr"] == "tcp://h:1" and row["current"] is False


def test_unusable_entries_are_skipped_with_the_reason(up, home):
    put_upstream(home, envd_contexts("ok", [
        {"Name": "ok", "Builder": "tcp", "BuilderAddress": "h:1", "Runner": "docker"},
        {"Name": "bad name", "Builder": "tcp", "BuilderAddress": "h:2", "Runner": "docker"},
        {"Name": "ok", "Builder": "tcp", "BuilderAddress": "h:3", "Runner": "docker"},
        {"Name": "no-address", "Builder": "tcp", "Runner": "docker"},
    ]))
    got = {c["context"] + str(i): c for i, c in enumerate(report(up)["contexts"])}
    assert got["ok0"]["action"] == "imported"
    assert got["bad name1"]["action"] == "skipped"
    assert "invalid context name `bad name`" in got["bad name1"]["reason"]
    assert got["ok2"] == {**got["ok2"], "action": "skipped",
                          "reason": "listed twice in upstream's file"}
    assert got["no-address3"]["action"] == "skipped"
    assert "needs an address" in got["no-address3"]["reason"]
    assert [r["context"] for r in ls_json(up)] == ["default", "ok"]


def test_first_entry_missing_a_field_reads_as_upstream_reads_it(up, home):
    """Upstream lists this file's only context as tcp://envd_buildkitd (checked with its binary
    when the file was written): gob leaves the empty address out and upstream's reader keeps
    its default context's value for it."""
    put_upstream(home, "empty-first-address.gob")
    report(up, "--use")
    (row,) = [r for r in ls_json(up) if r["context"] == "empty-addr"]
    assert row["builder_addr"] == "tcp://envd_buildkitd" and row["current"] is True


@pytest.mark.parametrize("fixture", ["every-type", "empty-first-address-of-two"])
def test_reader_agrees_with_upstreams_listing(fixture):
    """Addresses as upstream's own `ls` of the same file printed them (Go's gob reuses the
    default context only for a one-entry list, so here the empty address stays empty)."""
    from envd_core.contexts.upstream import read_upstream

    read = read_upstream(DATA / f"{fixture}.gob")
    listed = json.loads((DATA / f"{fixture}.ls.json").read_text())
    assert [(c.name, c.builder, c.builder_url, c.runner, c.runner_address) for c in
            read.contexts] == [(r["context"], r["builder"], r["builder_addr"], r["runner"],
                                r.get("runner_addr")) for r in listed]
    assert read.current == next(r["context"] for r in listed if r["current"])


def future_field() -> bytes:
    fields = [(f, STRING) for f in CONTEXT_FIELDS] + [("BuilderOptions", STRING)]
    return envd_contexts("a", [{"Name": "a", "Builder": "tcp", "BuilderAddress": "h:1",
                                "Runner": "docker", "BuilderOptions": "tls=1"}],
                         context_fields=fields)


def wrong_type() -> bytes:
    fields = [(f, STRING) for f in CONTEXT_FIELDS[:-1]] + [("RunnerAddress", 2)]
    return envd_contexts("a", [{"Name": "a", "Builder": "tcp"}], context_fields=fields)


REJECTED = {
    "empty": (lambda: b"", "empty file"),
    "truncated": (lambda: (DATA / "every-type.gob").read_bytes()[:400], "truncated data"),
    "corrupt": (lambda: b"\x05" + bytes(4) + (DATA / "fresh.gob").read_bytes(), "type id 0"),
    "json": (lambda: b'{"current": "default"}', "truncated data"),
    "future-field": (future_field, ("Context has a field `BuilderOptions` upstream envd v1.3.4 "
                                    "does not write")),
    "wrong-type": (wrong_type, "field `Context.RunnerAddress` is a int, not a string"),
    "auth-file": (lambda: (DATA / "auth.gob").read_bytes(), "the value is a EnvdAuth"),
}


@pytest.mark.parametrize("name", list(REJECTED))
def test_bad_upstream_files_are_one_line_and_change_nothing(up, home, envd_config_dir, name):
    make, message = REJECTED[name]
    assert up("context", "create", "--name", "mine", "--builder", "tcp",
              "--builder-address", "h:1").exit_code == 0
    store = envd_config_dir / "contexts.json"
    before = store.read_bytes()
    content = make()
    source = put_upstream(home, content)
    for extra in ((), ("--dry-run",), ("--use",)):
        result = up("context", "import", "--from-upstream", *extra)
        stderr = assert_one_error(result)
        assert f"upstream envd's context file `{source}` is not a context store" in stderr
        assert message in stderr
        assert result.stdout == ""
    assert store.read_bytes() == before
    assert source.read_bytes() == content


def test_missing_upstream_file_and_usage_mistakes(up, home):
    missing = up("context", "import", "--from-upstream")
    assert "does not exist" in assert_one_error(missing)
    both = up("context", "import", "--from-upstream", "x", "f.json")
    assert "--from-upstream takes no NAME or FILE" in assert_one_error(both, code=2)
    dry = up("context", "import", "x", "f.json", "--dry-run")
    assert "--dry-run applies to --from-upstream only" in assert_one_error(dry, code=2)
    bare = up("context", "import")
    assert "give NAME and FILE" in assert_one_error(bare, code=2)


def test_report_lists_what_is_not_imported_yet(up, home):
    put_upstream(home, "fresh.gob")
    (home / ".config" / "envd" / "id_rsa_envd").write_text("key")
    got = report(up)
    assert list(got["not_imported"]) == ["id_rsa_envd"]
    text = up("context", "import", "--from-upstream")
    assert "Not imported yet: id_rsa_envd" in text.stderr


# -- first-run hint --------------------------------------------------------------------------
HINT = "envd: found upstream envd's contexts in"


def test_first_run_hint_once_on_stderr(up, home):
    put_upstream(home, "every-type.gob")
    first = up("context", "ls")
    assert first.exit_code == 0
    hints = [line for line in first.stderr_lines if line.startswith(HINT)]
    assert len(hints) == 1 and "`envd context import --from-upstream`" in hints[0]
    assert HINT not in first.stdout
    again = up("context", "ls")
    assert HINT not in again.stderr


def test_first_run_hint_silent_under_json_and_for_the_import(up, home):
    put_upstream(home, "every-type.gob")
    for args in (("context", "ls", "--format", "json"), ("context", "ls", "-f", "json"),
                 ("context", "show", "--format=json"),
                 ("context", "import", "--from-upstream", "--dry-run")):
        result = up(*args)
        assert result.exit_code == 0, result
        assert HINT not in result.stderr, args
    assert HINT in up("context", "ls").stderr  # still unshown until now: shown once, here


def test_no_hint_without_upstream_file_or_once_ours_has_more(up, home):
    assert HINT not in up("context", "ls").stderr
    assert up("context", "create", "--name", "mine", "--builder", "tcp",
              "--builder-address", "h:1").exit_code == 0
    put_upstream(home, "every-type.gob")
    assert HINT not in up("context", "ls").stderr


def test_hint_never_stops_a_command_on_a_corrupt_store(up, home, envd_config_dir):
    put_upstream(home, "every-type.gob")
    envd_config_dir.mkdir()
    (envd_config_dir / "contexts.json").write_text("{")
    result = up("context", "ls")
    stderr = assert_one_error(result)
    assert "is corrupt" in stderr and HINT not in stderr


PROBE = """
import json, sys
from envd_core.cli import create_cli, run

code = run(create_cli(), ["context", "ls"])
print(json.dumps({"code": code, "loaded": [m for m in ("envd_core.contexts.upstream",
      "envd_core.contexts.gob") if m in sys.modules]}))
"""


@pytest.mark.parametrize("with_upstream", [False, True])
def test_context_ls_pays_for_the_gob_reader_only_when_importing(tmp_path, with_upstream):
    """`envd context ls` runs often: the hint check must not load the reader."""
    import subprocess
    import sys

    home = tmp_path / "home"
    (home / ".config" / "envd").mkdir(parents=True)
    if with_upstream:
        put_upstream(home, "every-type.gob")
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "ENVD_CONFIG_DIR": str(tmp_path / "cfg"),
           "ENVD_RESIDENT": "0"}  # the probe inspects this process's imports
    for _ in range(2):  # the second run is after the hint was shown
        done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                              text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout.splitlines()[-1])
        assert report["code"] == 0
        expected = ["envd_core.contexts.upstream"] if with_upstream else []
        assert report["loaded"] == expected


@pytest.fixture
def team_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, envd_config_dir: Path) -> Path:
    """An empty system directory of team contexts (after envd_config_dir clears ENVD_*)."""
    directory = tmp_path / "team"
    directory.mkdir()
    monkeypatch.setenv("ENVD_TEAM_CONTEXTS_DIR", str(directory))
    return directory


def test_upstream_import_never_stores_a_team_contexts_name(
        cli: Any, register_plugin: Any, team_dir: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, envd_config_dir: Path) -> None:
    register_plugin(make_plugin(builders=[TcpLike, UnixLike, MobyLike], runners=[DockerLike]))
    home = tmp_path / "home"
    (home / ".config" / "envd").mkdir(parents=True)
    (home / ".config" / "envd" / "contexts").write_bytes((DATA / "every-type.gob").read_bytes())
    monkeypatch.setenv("HOME", str(home))
    team = Context(name="tcp-ctx", builder="tcp", builder_address="farm.corp:1234")
    (team_dir / "corp.json").write_text(json.dumps(
        {"format": "envd-team-contexts/v1", "contexts": [team.to_json()]}))
    done = cli("context", "import", "--from-upstream", "--format", "json")
    assert done.exit_code == 0, done
    (item,) = [c for c in json.loads(done.stdout)["contexts"] if c["context"] == "tcp-ctx"]
    assert item["action"] == "skipped" and "a different context `tcp-ctx`" in item["reason"]
    stored = json.loads((envd_config_dir / "contexts.json").read_text())
    assert "tcp-ctx" not in [c["name"] for c in stored["contexts"]]
    assert "unix-ctx" in [c["name"] for c in stored["contexts"]]  # the others are imported
