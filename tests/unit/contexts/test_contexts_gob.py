"""The gob reader, on files written by the real upstream envd v1.3.4 binary.

The files in ``data/upstream/`` were written once by upstream envd v1.3.4 (built by
``scripts/infra`` into ``/var/lib/envd-infra/bin/upstream/envd``), run with an isolated
``HOME``:

- ``fresh.gob``: its first run (``envd context ls``): the default context only.
- ``every-type.gob``: ``context create`` of tcp, unix, docker-container, kube-pod (with query
  parameters), moby-worker (with a runner address) and an envd-server runner, then
  ``context use --name kube-ctx``; ``every-type.ls.json`` is upstream's own
  ``context ls --format json`` of it.
- ``empty-first-address.gob``: a context created with ``--builder-address ""``, then
  ``default`` removed, so the first entry lacks its address.
- ``empty-first-address-of-two.gob``: the same, with a second context after it;
  ``empty-first-address-of-two.ls.json`` is upstream's ``context ls --format json`` of it.
- ``auth.gob``: the (empty) login file upstream writes next to ``contexts``.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from _gob_writer import envd_contexts

from envd_core.contexts import gob

DATA = Path(__file__).parent / "data" / "upstream"


def test_reads_upstream_every_type_file():
    stream = gob.decode((DATA / "every-type.gob").read_bytes())
    (value,) = stream.values
    assert stream.name_of(value.type_id) == "EnvdContext"
    assert value.value["Current"] == "kube-ctx"
    names = [c["Name"] for c in value.value["Contexts"]]
    assert names == ["default", "tcp-ctx", "unix-ctx", "dc-ctx", "kube-ctx", "moby-ctx",
                     "server-ctx"]
    kube = value.value["Contexts"][4]
    assert kube == {"Name": "kube-ctx", "Builder": "kube-pod", "Runner": "docker",
                    "BuilderAddress": "buildkitd-0?namespace=ci&context=prod&container=buildkitd"}
    # RunnerAddress is a *string upstream: sent as the string when set, absent when nil
    assert value.value["Contexts"][6]["RunnerAddress"] == "http://envd-server.corp:8080"
    assert "RunnerAddress" not in value.value["Contexts"][0]


def test_types_of_the_upstream_file():
    stream = gob.decode((DATA / "every-type.gob").read_bytes())
    by_name = {wire.name: wire for wire in stream.types.values()}
    assert set(by_name) == {"EnvdContext", "Context", "[]types.Context"}
    context = by_name["Context"]
    assert isinstance(context, gob.StructType)
    assert context.fields == tuple((f, gob.STRING) for f in
                                   ("Name", "Builder", "BuilderAddress", "Runner", "RunnerAddress"))


def test_reads_another_upstream_type_with_other_ids():
    """The auth file: its type ids differ (they depend on what the process encoded first)."""
    stream = gob.decode((DATA / "auth.gob").read_bytes())
    (value,) = stream.values
    assert stream.name_of(value.type_id) == "EnvdAuth"
    assert value.value == {}  # every field at its zero value, so none was sent


def test_writer_reproduces_upstream():
    """The test writer is byte-exact against the real file, so its variants are credible."""
    real = (DATA / "every-type.gob").read_bytes()
    (value,) = gob.decode(real).values
    assert envd_contexts(value.value["Current"], value.value["Contexts"]) == real


# envd_contexts("x", []) ends with the value message (1 length byte + 6): cutting it leaves the
# type definitions
@pytest.mark.parametrize("data, message", [
    (b"", "empty file"),
    (b"\x05\x01", "truncated data: the message at byte 0 needs 5 bytes, 1 remain"),
    (b"\x00", "invalid message length 0 at byte 0"),
    (b"\xf0" + bytes(20), "invalid unsigned integer"),
    (b'{"schema": 1, "contexts": []}', "truncated data"),
    (envd_contexts("x", [])[:-7], "no value in the stream, only type definitions"),
])
def test_malformed_streams_are_one_line(data, message):
    with pytest.raises(gob.GobError) as caught:
        gob.decode(data)
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_every_truncation_of_a_real_file_is_rejected():
    real = (DATA / "every-type.gob").read_bytes()
    for cut in range(len(real)):
        with pytest.raises(gob.GobError):
            gob.decode(real[:cut])


def test_random_corruption_raises_only_gob_error():
    """Flipped bytes either decode to something or raise GobError: never another exception."""
    real = (DATA / "every-type.gob").read_bytes()
    rng = random.Random(17)
    rejected = 0
    for _ in range(2000):
        mutated = bytearray(real)
        for _ in range(rng.randint(1, 4)):
            mutated[rng.randrange(len(mutated))] = rng.randrange(256)
        try:
            gob.decode(bytes(mutated))
        except gob.GobError:
            rejected += 1
    assert rejected > 1000  # most corruptions break the framing or the types


def test_basic_values_and_singletons():
    from _gob_writer import message, sint, uint

    # a top-level non-struct value (a string, id 6) is preceded by a zero delta
    assert gob.decode(message(sint(6) + b"\x00" + b"\x03abc")).values[0].value == "abc"
    assert gob.decode(message(sint(2) + b"\x00" + sint(-300))).values[0].value == -300
    assert gob.decode(message(sint(3) + b"\x00" + uint(70000))).values[0].value == 70000
    assert gob.decode(message(sint(1) + b"\x00" + b"\x01")).values[0].value is True
    # floats travel byte-reversed: 1.0 is 0x3ff0... reversed, i.e. uint 0xf03f
    assert gob.decode(message(sint(4) + b"\x00" + uint(0xF03F))).values[0].value == 1.0
    with pytest.raises(gob.GobError, match="non-zero field delta"):
        gob.decode(message(sint(6) + b"\x01\x03abc"))
    with pytest.raises(gob.GobError, match="undefined type id 70"):
        gob.decode(message(sint(70) + b"\x00"))
    with pytest.raises(gob.GobError, match="interface values"):
        gob.decode(message(sint(8) + b"\x00\x00"))
