"""Property tests: any graph serializes validly and deterministically; parsers never crash."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from envd_core.buildkit import llb
from envd_core.buildkit._pb import ops_pb2
from envd_core.buildkit.transport import parse_go_duration
from envd_core.errors import ValidationError

_names = st.text(alphabet="abcdefgh/._-", min_size=1, max_size=12)


@st.composite
def graphs(draw: st.DrawFn) -> llb.State:
    """Random graphs of images, execs (with mounts), file actions and merges."""
    states = [llb.image(draw(st.sampled_from(["busybox", "debian:bookworm", "a/b:c"])))]
    for _ in range(draw(st.integers(1, 8))):
        base = draw(st.sampled_from(states))
        kind = draw(st.sampled_from(["run", "mkfile", "mkdir", "copy", "merge", "mount"]))
        if kind == "run":
            new = base.run(draw(st.text(max_size=20)), cwd=draw(_names)).root()
        elif kind == "mount":
            other = draw(st.sampled_from(states))
            ex = base.run(["true"], mounts=[llb.bind("/m", other), llb.cache("/c", "id")])
            new = ex.get_mount("/m") if draw(st.booleans()) else ex.root()
        elif kind == "mkfile":
            new = base.mkfile(draw(_names), draw(st.binary(max_size=16)))
        elif kind == "mkdir":
            new = base.mkdir(draw(_names))
        elif kind == "copy":
            new = base.copy(draw(st.sampled_from(states)), draw(_names), draw(_names))
        else:
            new = llb.merge([base, draw(st.sampled_from(states))])
        states.append(new)
    return states[-1]


@settings(max_examples=60, deadline=None)
@given(graphs())
def test_any_graph_is_valid_and_deterministic(state: llb.State) -> None:
    d1, d2 = state.to_definition(), state.to_definition()
    assert d1.SerializeToString(deterministic=True) == d2.SerializeToString(deterministic=True)
    raw = list(getattr(d1, "def"))
    assert len(raw) >= 2
    seen: set[str] = set()
    for data in raw[:-1]:
        op = ops_pb2.Op.FromString(data)
        assert op.WhichOneof("op") is not None
        assert all(i.digest in seen for i in op.inputs)
        seen.add("sha256:" + hashlib.sha256(data).hexdigest())
    terminal = ops_pb2.Op.FromString(raw[-1])
    assert [i.digest for i in terminal.inputs] == ["sha256:" + hashlib.sha256(raw[-2]).hexdigest()]
    assert len(seen) == len(raw) - 1  # no duplicate ops
    assert set(d1.metadata) == seen | {"sha256:" + hashlib.sha256(raw[-1]).hexdigest()}


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=16))
def test_duration_parser_never_crashes(text: str) -> None:
    try:
        value = parse_go_duration(text)
    except ValidationError as e:
        assert "invalid duration" in str(e)
    else:
        assert isinstance(value, float)
