"""Test-only helpers: drive a real buildkitd with plain Control RPCs.

They use the committed Control protos directly, so the session tests do not depend on the
high-level client (``envd_core.buildkit.client``) beyond the wire format.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import grpc

from envd_core.buildkit._pb import control_pb2, ops_pb2
from envd_core.buildkit.session.core import MAX_MESSAGE, Session, new_id


def channel_for(address: str) -> grpc.Channel:
    """A grpc channel to ``unix:///path`` (as BUILDKIT_UNIX is written)."""
    assert address.startswith("unix://"), address
    return grpc.insecure_channel(
        "unix:" + address[len("unix://") :],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ],
    )


def solve(
    channel: grpc.Channel,
    session: Session,
    *,
    frontend: str = "dockerfile.v0",
    frontend_attrs: Mapping[str, str] | None = None,
    frontend_inputs: Mapping[str, Any] | None = None,
    definition: Any = None,
    exporters: Sequence[tuple[str, Mapping[str, str]]] = (),
    entitlements: Sequence[str] = (),
    timeout: float = 300,
) -> dict[str, str]:
    """Run one Solve with ``session`` attached; returns the exporter response.

    Status is streamed concurrently (like buildctl) and its logs collected, so a failing step's
    output shows up in the assertion message.
    """
    ref = new_id()
    request = control_pb2.SolveRequest(
        Ref=ref,
        Session=session.id,
        Frontend=frontend if definition is None else "",
        FrontendAttrs=dict(frontend_attrs or {}),
        Entitlements=list(entitlements),
    )
    # buildkitd v0.18.2 dereferences Cache unconditionally: an absent field 8 crashes the daemon.
    request.Cache.SetInParent()
    if definition is not None:
        request.Definition.CopyFrom(definition)
    for key, value in (frontend_inputs or {}).items():
        request.FrontendInputs[key].CopyFrom(value)
    if exporters:
        request.ExporterDeprecated = exporters[0][0]
        request.ExporterAttrsDeprecated.update(exporters[0][1])
        for kind, attrs in exporters:
            request.Exporters.add(Type=kind, Attrs=dict(attrs))
    logs: list[bytes] = []

    def status() -> None:
        call = channel.unary_stream(
            "/moby.buildkit.v1.Control/Status",
            request_serializer=control_pb2.StatusRequest.SerializeToString,
            response_deserializer=control_pb2.StatusResponse.FromString,
        )(control_pb2.StatusRequest(Ref=ref), timeout=timeout)
        try:
            for message in call:
                logs.extend(log.msg for log in message.logs)
        except grpc.RpcError:
            pass

    watcher = threading.Thread(target=status, daemon=True)
    session.start(channel)
    watcher.start()
    try:
        response = channel.unary_unary(
            "/moby.buildkit.v1.Control/Solve",
            request_serializer=control_pb2.SolveRequest.SerializeToString,
            response_deserializer=control_pb2.SolveResponse.FromString,
        )(request, timeout=timeout)
    except grpc.RpcError as exc:
        watcher.join(5)
        tail = b"".join(logs)[-2000:].decode("utf-8", "replace")
        raise SolveFailed(f"{exc.code().name}: {exc.details()}\n--- logs ---\n{tail}") from None
    watcher.join(5)
    return dict(response.ExporterResponse)


class SolveFailed(AssertionError):
    """A Solve RPC failed; the message carries the daemon's error and the log tail."""


def mkfile_definition(path: str, data: bytes) -> Any:
    """A tiny LLB: scratch + mkfile (for tests that need no frontend)."""
    import hashlib

    op = ops_pb2.Op(
        file=ops_pb2.FileOp(
            actions=[
                ops_pb2.FileAction(
                    input=-1,
                    secondaryInput=-1,
                    output=0,
                    mkfile=ops_pb2.FileActionMkFile(path=path, mode=0o644, data=data),
                )
            ]
        )
    )
    raw = op.SerializeToString(deterministic=True)
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    terminal = ops_pb2.Op(inputs=[ops_pb2.Input(digest=digest, index=0)])
    definition = ops_pb2.Definition()
    getattr(definition, "def").extend([raw, terminal.SerializeToString(deterministic=True)])
    return definition
