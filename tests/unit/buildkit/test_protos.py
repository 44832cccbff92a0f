"""The hand-written protos are wire-compatible: exact package/service names and field numbers."""

from __future__ import annotations

from envd_core.buildkit._pb import control_pb2, ops_pb2, worker_pb2


def _num(msg: type, field: str) -> int:
    return msg.DESCRIPTOR.fields_by_name[field].number  # type: ignore[attr-defined]


def test_packages_and_service_paths_are_upstream_ones() -> None:
    assert control_pb2.DESCRIPTOR.package == "moby.buildkit.v1"
    assert ops_pb2.DESCRIPTOR.package == "pb"
    assert worker_pb2.DESCRIPTOR.package == "moby.buildkit.v1.types"
    svc = control_pb2.DESCRIPTOR.services_by_name["Control"]
    assert svc.full_name == "moby.buildkit.v1.Control"
    assert {m.name for m in svc.methods} >= {
        "DiskUsage",
        "Prune",
        "Solve",
        "Status",
        "Session",
        "ListWorkers",
        "Info",
    }


def test_solve_request_field_numbers() -> None:
    expected = {
        "Ref": 1,
        "Definition": 2,
        "ExporterDeprecated": 3,
        "ExporterAttrsDeprecated": 4,
        "Session": 5,
        "Frontend": 6,
        "FrontendAttrs": 7,
        "Cache": 8,
        "Entitlements": 9,
        "FrontendInputs": 10,
        "Internal": 11,
        "Exporters": 13,
    }
    for name, number in expected.items():
        assert _num(control_pb2.SolveRequest, name) == number


def test_llb_field_numbers() -> None:
    assert {
        f: _num(ops_pb2.Op, f)
        for f in ("inputs", "exec", "source", "file", "merge", "diff", "platform", "constraints")
    } == {
        "inputs": 1,
        "exec": 2,
        "source": 3,
        "file": 4,
        "merge": 6,
        "diff": 7,
        "platform": 10,
        "constraints": 11,
    }
    assert _num(ops_pb2.Mount, "cacheOpt") == 20
    assert _num(ops_pb2.Mount, "secretOpt") == 21
    assert _num(ops_pb2.Mount, "TmpfsOpt") == 19
    assert _num(ops_pb2.FileActionCopy, "timestamp") == 11
    assert _num(ops_pb2.FileAction, "rm") == 7
    assert _num(ops_pb2.Definition, "metadata") == 2


def test_solve_request_round_trip_and_known_bytes() -> None:
    req = control_pb2.SolveRequest(Ref="r", ExporterDeprecated="image", Session="s")
    req.ExporterAttrsDeprecated["name"] = "x"
    req.Exporters.add(Type="image", Attrs={"name": "x"})
    req.Cache.SetInParent()
    data = req.SerializeToString(deterministic=True)
    assert control_pb2.SolveRequest.FromString(data) == req
    # field 1 (len) "r", then field 3 (len) "image": hand-checked wire bytes
    assert control_pb2.SolveRequest(Ref="r", ExporterDeprecated="image").SerializeToString() == (
        b"\x0a\x01r\x1a\x05image"
    )


def test_status_response_round_trip() -> None:
    resp = control_pb2.StatusResponse()
    v = resp.vertexes.add(digest="sha256:a", name="step", cached=True)
    v.started.seconds = 10
    resp.logs.add(vertex="sha256:a", stream=1, msg=b"hello\n")
    assert control_pb2.StatusResponse.FromString(resp.SerializeToString()) == resp


def test_worker_record_round_trip() -> None:
    rec = worker_pb2.WorkerRecord(ID="w", Labels={"a": "b"})
    rec.platforms.add(OS="linux", Architecture="arm64", Variant="v8")
    rec.GCPolicy.add(all=True, keepBytes=10)
    assert worker_pb2.WorkerRecord.FromString(rec.SerializeToString()) == rec
