"""The session's health service keeps answering while a big upload is in flight."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import grpc
import pytest
from _daemon import solve

from envd_core.buildkit._pb import health_pb2
from envd_core.buildkit.session import LocalDir, Session
from envd_core.buildkit.session.core import new_id

pytestmark = pytest.mark.integration

BIG = 256 << 20


def test_health_answers_during_big_transfer(buildkit: Any, tmp_path: Path) -> None:
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    with open(ctx / "big.bin", "wb") as fh:
        block = bytes(range(256)) * 4096  # 1 MiB, not all zeros
        fh.writelines(block for _ in range(BIG // len(block)))
    (ctx / "Dockerfile").write_text("FROM scratch\nCOPY big.bin /\n")
    session = Session(
        shared_key="envd-test-" + new_id(),
        local_dirs={"context": LocalDir(ctx), "dockerfile": LocalDir(ctx)},
    )
    results: list[bool] = []
    during_transfer: list[bool] = []
    done = threading.Event()

    def probe() -> None:
        channel = grpc.insecure_channel(session.serve_local())
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        while not done.is_set():
            in_flight = any(
                t.dir_name == "context" and t.data_bytes > 0 and not t.finished
                for t in list(session.transfers)
            )
            try:
                # The daemon gives v0.8 sessions 10 s; a 2 s deadline is far stricter.
                ok = check(health_pb2.HealthCheckRequest(), timeout=2).status == 1
            except grpc.RpcError:
                ok = False
            results.append(ok)
            during_transfer.append(in_flight)
            done.wait(0.05)
        channel.close()

    session.serve_local()
    prober = threading.Thread(target=probe)
    prober.start()
    try:
        with session:
            try:
                solve(buildkit, session, exporters=[])
            finally:
                # stop probing before the session's server closes, or the last probe can land
                # on a closing server and count as a failed check
                done.set()
                prober.join()
    finally:
        done.set()
        prober.join()
    big = [t for t in session.transfers if "big.bin" in t.bytes_by_path]
    assert big and big[0].bytes_by_path["big.bin"] == BIG
    assert all(results), f"{results.count(False)} of {len(results)} health checks failed"
    assert sum(during_transfer) >= 3, "too few checks overlapped the upload to prove anything"
