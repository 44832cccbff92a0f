"""The readable forms of a definition (``envd debug llb``): the dot graph's nodes and edges,
and the JSON lines in the shape Go's encoder gives buildkit's structs. The byte-for-byte check
against ``buildctl debug dump-llb`` is the integration test test_envd_debug_llb.py."""

from __future__ import annotations

import base64
import hashlib
import json

from envd_core.buildkit import llb
from envd_core.buildkit.llb_dump import as_dot, as_json_lines, ops
from envd_core.buildkit.llb_ops import bind, cache


def _definition() -> bytes:
    base = llb.image("docker.io/library/alpine:3.20")
    context = llb.local("context")
    built = base.run(["sh", "-c", 'echo "hi" > /x'],
                     mounts=[bind("/src", context, readonly=True),
                             cache("/root/.cache", id="pip")]).root()
    done = built.mkfile("/etc/motd", b"\x00hello", owner=0).copy(context, "a.txt", "/a.txt")
    return done.to_definition().SerializeToString(deterministic=True)


def test_ops_are_the_definition_in_order_with_their_digests() -> None:
    data = _definition()
    listed = ops(data)
    from envd_core.buildkit._pb import ops_pb2
    from envd_core.buildkit.llb_ops import definition_ops

    raw = list(definition_ops(ops_pb2.Definition.FromString(data)))
    assert [d for d, _, _ in listed] == ["sha256:" + hashlib.sha256(r).hexdigest() for r in raw]
    assert listed[-1][1].WhichOneof("op") is None  # the result op


def test_dot_draws_each_op_and_labels_mounted_inputs() -> None:
    text = as_dot(_definition())
    assert text.startswith("digraph {\n") and text.endswith("}\n")
    assert '[label="docker-image://docker.io/library/alpine:3.20" shape="ellipse"];' in text
    assert '[label="sh -c echo \\"hi\\" > /x" shape="box"];' in text
    assert '[label="mkfile{path=/etc/motd}" shape="note"];' in text
    assert '[label="copy{src=/a.txt, dest=/a.txt}" shape="note"];' in text
    edges = [line for line in text.splitlines() if " -> " in line]
    assert any(line.endswith('[label="/src"];') for line in edges)  # bind mount's input
    assert any(line.endswith('[label=""];') for line in edges)  # the exec's rootfs
    listed = ops(_definition())
    assert f'"{listed[-1][0]}" [label="{listed[-1][0]}" shape="plaintext"];' in text


def test_json_lines_have_go_shapes() -> None:
    entries = [json.loads(line) for line in as_json_lines(_definition()).splitlines()]
    by_kind = {next(iter(e["Op"]["Op"]), ""): e for e in entries}
    assert by_kind[""]["Op"]["Op"] == {}  # Go prints the empty oneof wrapper
    execute = by_kind["exec"]["Op"]["Op"]["exec"]
    cache_mount = next(m for m in execute["mounts"] if m.get("mountType"))
    assert cache_mount["input"] == -1 and cache_mount["mountType"] == 3  # numbers, enum as int
    assert execute["mounts"][0] == {"dest": "/"}  # zero fields left out
    for entry in entries:
        for action in (entry["Op"]["Op"].get("file") or {}).get("actions", []):
            assert {"input", "secondaryInput", "output", "Action"} <= set(action)  # always
            made = action["Action"].get("mkfile")
            if made is not None:
                assert base64.b64decode(made["data"]) == b"\x00hello"
                assert made["owner"]["user"] == {"User": {}}  # byID 0: dropped, as Go's omitempty
    assert all(set(e) == {"Op", "Digest", "OpMetadata"} for e in entries)
