"""LLB graphs: deterministic digests and ops shaped the way BuildKit expects."""

from __future__ import annotations

import hashlib
import json

import pytest

from envd_core.buildkit import llb
from envd_core.buildkit._pb import ops_pb2
from envd_core.errors import ValidationError


def ops(state: llb.State, platform: str | None = None) -> list[ops_pb2.Op]:
    d = state.to_definition(platform)
    return [ops_pb2.Op.FromString(b) for b in getattr(d, "def")]


def by_digest(state: llb.State) -> dict[str, ops_pb2.Op]:
    d = state.to_definition()
    return {
        "sha256:" + hashlib.sha256(b).hexdigest(): ops_pb2.Op.FromString(b)
        for b in getattr(d, "def")
    }


def graph() -> llb.State:
    base = llb.image("busybox").with_env("A", "1")
    ex = base.run("echo hi", cwd="/work", mounts=[llb.cache("/root/.cache", "pip")], name="hi")
    return ex.root().mkdir("/out").mkfile("/out/f", b"data")


def test_same_graph_same_bytes_and_digest() -> None:
    a, b = graph().to_definition(), graph().to_definition()
    assert a.SerializeToString(deterministic=True) == b.SerializeToString(deterministic=True)
    assert graph().digest() == graph().digest()
    assert graph().digest() != graph().mkdir("/other").digest()


def test_dependencies_first_and_terminal_op_last() -> None:
    d = graph().to_definition()
    raw = list(getattr(d, "def"))
    digests = ["sha256:" + hashlib.sha256(b).hexdigest() for b in raw]
    seen: set[str] = set()
    for data, dg in zip(raw[:-1], digests[:-1], strict=True):
        for inp in ops_pb2.Op.FromString(data).inputs:
            assert inp.digest in seen  # every input defined earlier
        seen.add(dg)
    terminal = ops_pb2.Op.FromString(raw[-1])
    assert terminal.WhichOneof("op") is None
    assert len(terminal.inputs) == 1 and terminal.inputs[0].digest == digests[-2]
    assert terminal.inputs[0].index == 0
    assert not terminal.HasField("platform")


def test_every_op_has_metadata_keyed_by_its_digest() -> None:
    # Frontends rebuild inputs with NewDefinitionOp, which rejects definitions without metadata.
    d = graph().to_definition()
    digests = {"sha256:" + hashlib.sha256(b).hexdigest() for b in getattr(d, "def")}
    assert set(d.metadata) == digests


def test_metadata_keyed_by_digest_with_custom_name() -> None:
    d = graph().to_definition()
    names = {k: v.description.get("llb.customname") for k, v in d.metadata.items()}
    assert "hi" in names.values()
    assert all(k in by_digest(graph()) for k in names)


def test_image_identifier_normalized_and_platform() -> None:
    src = ops(llb.image("busybox", resolve_mode="pull"), "linux/arm64/v8")[0]
    assert src.source.identifier == "docker-image://docker.io/library/busybox:latest"
    assert src.source.attrs["image.resolvemode"] == "pull"
    assert (src.platform.OS, src.platform.Architecture, src.platform.Variant) == (
        "linux",
        "arm64",
        "v8",
    )


@pytest.mark.parametrize(
    "ref,want",
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("user/app:1", "docker.io/user/app:1"),
        ("127.0.0.1:5000/busybox:latest", "127.0.0.1:5000/busybox:latest"),
        ("localhost/x", "localhost/x:latest"),
        ("ghcr.io/o/r@sha256:" + "a" * 64, "ghcr.io/o/r@sha256:" + "a" * 64),
    ],
)
def test_normalize_image_ref(ref: str, want: str) -> None:
    assert llb.normalize_image_ref(ref) == want


def test_bad_image_ref_is_a_clear_error() -> None:
    with pytest.raises(ValidationError, match="`Busybox`"):
        llb.image("Busybox")


def test_exec_mounts_outputs_and_inputs() -> None:
    base = llb.image("busybox")
    data = llb.scratch().mkfile("/f", "x")
    ex = base.run(
        ["ls"],
        mounts=[
            llb.bind("/data", data),
            llb.bind("/ro", data, readonly=True),
            llb.cache("/cache", "c1", sharing="locked"),
            llb.secret("/run/secrets/s", "s"),
            llb.ssh(),
            llb.tmpfs("/tmp", size=1 << 20),
            llb.bind("/out", llb.scratch()),
        ],
    )
    op = ops(ex)[-2]
    assert [i.digest for i in op.inputs] == [base.digest(), data.digest()]  # deduplicated
    m = {x.dest: x for x in op.exec.mounts}
    assert (m["/"].input, m["/"].output, m["/"].mountType) == (0, 0, ops_pb2.BIND)
    assert (m["/data"].input, m["/data"].output) == (1, 1)
    assert (m["/ro"].input, m["/ro"].output, m["/ro"].readonly) == (1, -1, True)
    assert (
        m["/cache"].output,
        m["/cache"].mountType,
        m["/cache"].cacheOpt.ID,
        m["/cache"].cacheOpt.sharing,
    ) == (-1, ops_pb2.CACHE, "c1", ops_pb2.LOCKED)
    assert (m["/run/secrets/s"].input, m["/run/secrets/s"].secretOpt.mode) == (-1, 0o400)
    assert m["/run/buildkit/ssh_agent.0"].SSHOpt.ID == "default"
    assert (m["/tmp"].input, m["/tmp"].output, m["/tmp"].TmpfsOpt.size) == (-1, -1, 1 << 20)
    assert (m["/out"].input, m["/out"].output) == (-1, 2)
    # get_mount refers to the right output index
    out = ops(ex.get_mount("/out"))[-1]
    assert out.inputs[0].index == 2
    with pytest.raises(ValidationError, match="`/ro`"):
        ex.get_mount("/ro")


def test_exec_meta_env_cwd_user_network() -> None:
    st = llb.image("busybox").with_env("A", "1").with_cwd("/w").with_user("nobody")
    op = ops(st.run("true", env={"B": "2"}, cwd="sub", network="host", security="insecure"))[-2]
    assert list(op.exec.meta.args) == ["/bin/sh", "-c", "true"]
    assert list(op.exec.meta.env) == ["A=1", "B=2"]
    assert (op.exec.meta.cwd, op.exec.meta.user) == ("/w/sub", "nobody")
    assert (op.exec.network, op.exec.security) == (ops_pb2.HOST, ops_pb2.INSECURE)


def test_file_action_indexes_chain_and_secondary_input() -> None:
    base = llb.image("busybox")
    other = llb.image("alpine").with_cwd("/src")
    st = base.with_cwd("/app").file(
        llb.mkdir("d"),
        llb.mkfile("d/f", "x", 0o600),
        llb.copy(other, "a", "dst/"),
        llb.rm("/tmp/x", allow_not_found=True),
    )
    op = ops(st)[-2]
    acts = op.file.actions
    assert len(op.inputs) == 2
    assert [a.input for a in acts] == [0, 2, 3, 4]  # base, then previous action results
    assert [a.secondaryInput for a in acts] == [-1, -1, 1, -1]
    assert [a.output for a in acts] == [-1, -1, -1, 0]
    assert acts[0].mkdir.path == "/app/d" and acts[0].mkdir.makeParents
    assert acts[1].mkfile.path == "/app/d/f" and acts[1].mkfile.mode == 0o600
    assert acts[1].mkfile.timestamp == -1  # unset, not the epoch
    assert (acts[2].copy.src, acts[2].copy.dest, acts[2].copy.mode) == ("/src/a", "/app/dst/", -1)
    assert acts[3].rm.allowNotFound
    assert not op.HasField("platform")  # FileOp carries no platform, like the Go client


def test_file_on_scratch_uses_minus_one() -> None:
    op = ops(llb.scratch().mkfile("/f", "x"))[0]
    assert len(op.inputs) == 0 and op.file.actions[0].input == -1


def test_chown_by_name_and_id() -> None:
    op = ops(llb.scratch().mkfile("/f", "x", owner="1000:staff"))[0]
    owner = op.file.actions[0].mkfile.owner
    assert owner.user.byID == 1000 and owner.group.byName.name == "staff"


def test_local_source_attrs_are_json_arrays() -> None:
    op = ops(llb.local("context", include=["src/**"], exclude=["*.pyc"], shared_key_hint="p"))[0]
    assert op.source.identifier == "local://context"
    assert json.loads(op.source.attrs["local.includepattern"]) == ["src/**"]
    assert json.loads(op.source.attrs["local.excludepatterns"]) == ["*.pyc"]
    assert op.source.attrs["local.sharedkeyhint"] == "p"
    assert not op.HasField("platform")


def test_merge_and_diff() -> None:
    a, b = llb.scratch().mkfile("/a", "1"), llb.scratch().mkfile("/b", "2")
    m = ops(llb.merge([a, b]))[-2]
    assert [x.input for x in m.merge.inputs] == [0, 1]
    d = ops(llb.diff(a, a.mkfile("/c", "3")))[-2]
    assert (d.diff.lower.input, d.diff.upper.input) == (0, 1)
    d2 = ops(llb.diff(llb.scratch(), b))[-2]
    assert (d2.diff.lower.input, d2.diff.upper.input) == (-1, 0)


def test_identical_subgraphs_are_one_vertex() -> None:
    a = llb.image("busybox").run("true").root()
    b = llb.image("busybox").run("true").root()
    st = llb.merge([a.mkfile("/x", "1"), b.mkfile("/y", "2")])
    raw = list(getattr(st.to_definition(), "def"))
    assert len(raw) == len(set(raw))
    assert len(raw) == 6  # image, exec, 2 mkfile, merge, terminal


def test_scratch_cannot_be_built_and_bad_values_are_clear() -> None:
    with pytest.raises(ValidationError, match="scratch"):
        llb.scratch().to_definition()
    with pytest.raises(ValidationError, match="`bogus`"):
        llb.image("busybox").run("true", network="bogus")
    with pytest.raises(ValidationError, match="`linux`"):
        llb.image("busybox").to_definition(platform="linux")


def test_http_git_and_generic_sources() -> None:
    op = ops(llb.http("https://example.com/a.tgz", filename="a.tgz", perm=0o755))[0]
    assert op.source.identifier == "https://example.com/a.tgz"
    assert op.source.attrs["http.filename"] == "a.tgz" and op.source.attrs["http.perm"] == "0755"
    assert not op.HasField("platform")
    g = ops(llb.git("https://github.com/o/r.git", "v1"))[0]
    assert g.source.identifier == "git://github.com/o/r#v1"
    assert g.source.attrs["git.fullurl"] == "https://github.com/o/r.git"
    with pytest.raises(ValidationError, match="`nope`"):
        llb.source("nope")
    with pytest.raises(ValidationError, match="`ftp://x`"):
        llb.http("ftp://x")


def test_version_tuple() -> None:
    from envd_core.buildkit.client import _version_tuple

    assert _version_tuple("v0.18.2") == (0, 18, 2)
    assert _version_tuple("v0.13.0-rc1") == (0, 13, 0)
    assert _version_tuple("v0.0.0+unknown") == (0, 0, 0)
    assert _version_tuple("dev") is None


def test_a_chain_longer_than_the_recursion_limit_marshals() -> None:
    """Issue 15: ~1,000 chained run() calls gave `internal error: RecursionError`."""
    import sys

    from envd_core.buildkit import llb as llb_mod

    state = llb_mod.image("127.0.0.1:5000/busybox:latest")
    steps = sys.getrecursionlimit() * 3
    for i in range(steps):
        state = state.run(f"echo {i}", name=f"step {i}").root()
    definition = state.to_definition()
    # the image, every step, and the terminal op
    assert len(llb_mod.definition_ops(definition)) == steps + 2


def test_shared_inputs_are_emitted_once_and_before_their_users() -> None:
    import hashlib

    from envd_core.buildkit import llb as llb_mod
    from envd_core.buildkit._pb import ops_pb2

    base = llb_mod.image("127.0.0.1:5000/busybox:latest")
    left = base.run("echo left").root()
    right = base.run("echo right").root()
    top = left.run("echo top", mounts=[llb_mod.bind("/r", right)]).root()
    definition = top.to_definition()
    emitted: list[str] = []
    for data in llb_mod.definition_ops(definition):
        op = ops_pb2.Op()
        op.ParseFromString(data)
        assert all(inp.digest in emitted for inp in op.inputs)  # dependencies first
        emitted.append("sha256:" + hashlib.sha256(data).hexdigest())
    assert len(emitted) == len(set(emitted)) == 5  # base, left, right, top, terminal
