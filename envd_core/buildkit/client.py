"""``BuildkitClient``: the Control RPCs (workers, info, disk usage, prune, solve) over a Connection.

Solve follows what buildctl does: a fresh random ref, Status opened at the same moment as Solve
(the daemon only waits a few seconds for the ref to appear), the exporter written to the old
fields 3/4 *and* the v0.13+ ``Exporters`` list so v0.8 (dockerd 20.10) and current daemons both
understand it, and the session started before and closed after.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from envd_core import timings
from envd_core.buildkit.errors import classify, connection_error, rpc_error_text
from envd_core.buildkit.exporters import DOCKERD_EXPORTERS, Exporter
from envd_core.buildkit.progress import BuildTrace, short_error
from envd_core.errors import BuildError, EnvdError

if TYPE_CHECKING:
    import grpc
    from google.protobuf.timestamp_pb2 import Timestamp

    from envd_core.buildkit._pb import control_pb2, ops_pb2
    from envd_core.buildkit.transport import Connection

# Codes that mean "the daemon or the link is gone", not "your build is wrong".
_LINK_CODES = ("UNAVAILABLE", "DEADLINE_EXCEEDED")
_STATUS_DRAIN_S = 5.0  # like buildctl: stop waiting for Status this long after Solve ends
_LOG_TAIL = 20


class SolveSession(Protocol):
    """What ``solve`` needs from a session (``envd_core.buildkit.session.Session``)."""

    id: str

    def start(self, channel: grpc.Channel) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class GCPolicy:
    """One garbage-collection rule of a worker."""

    all: bool
    keep_duration_s: float
    keep_bytes: int
    filters: tuple[str, ...]


@dataclass(frozen=True)
class Worker:
    """A BuildKit worker: id, labels, platforms as ``os/arch[/variant]`` and GC policy."""

    id: str
    labels: Mapping[str, str]
    platforms: tuple[str, ...]
    gc_policy: tuple[GCPolicy, ...] = ()


@dataclass(frozen=True)
class BuildkitVersion:
    """What ``Info`` reports (BuildKit >= 0.11)."""

    package: str
    version: str
    revision: str


@dataclass(frozen=True)
class UsageRecord:
    """One build-cache record (DiskUsage / Prune)."""

    id: str
    size: int
    mutable: bool = False
    in_use: bool = False
    shared: bool = False
    description: str = ""
    record_type: str = ""
    usage_count: int = 0
    parents: tuple[str, ...] = ()
    created_at: float | None = None
    last_used_at: float | None = None


def platform_str(p: ops_pb2.Platform) -> str:
    """``pb.Platform`` -> ``os/arch[/variant]``."""
    return "/".join(x for x in (p.OS, p.Architecture, p.Variant) if x)


def _ts(t: Timestamp | None) -> float | None:
    return t.seconds + t.nanos / 1e9 if t is not None and (t.seconds or t.nanos) else None


def _usage(r: control_pb2.UsageRecord) -> UsageRecord:
    parents = tuple(r.Parents) or ((r.Parent,) if r.Parent else ())
    return UsageRecord(
        id=r.ID,
        size=r.Size,
        mutable=r.Mutable,
        in_use=r.InUse,
        shared=r.Shared,
        description=r.Description,
        record_type=r.RecordType,
        usage_count=r.UsageCount,
        parents=parents,
        created_at=_ts(r.CreatedAt) if r.HasField("CreatedAt") else None,
        last_used_at=_ts(r.LastUsedAt) if r.HasField("LastUsedAt") else None,
    )


def new_ref() -> str:
    """A random 25-character base36 id (the same shape buildctl uses for refs)."""
    alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"
    return "".join(secrets.choice(alphabet) for _ in range(25))


def _entries(items: Iterable[Exporter | Mapping[str, Any]]) -> list[Exporter]:
    return [
        it if isinstance(it, Exporter) else Exporter(it["type"], dict(it.get("attrs", {})))
        for it in items
    ]


class BuildkitClient:
    """Control-service calls on an open :class:`~envd_core.buildkit.transport.Connection`."""

    def __init__(self, connection: Connection) -> None:
        from envd_core.buildkit._pb import control_pb2_grpc

        self.connection = connection
        self._stub = control_pb2_grpc.ControlStub(connection.channel)

    # -- helpers
    def _fail(self, exc: BaseException) -> BaseException:
        return connection_error(exc, target=self.connection.target, tls=self.connection.tls)

    # -- simple RPCs
    def list_workers(self, *, timeout: float | None = None) -> list[Worker]:
        """The daemon's workers."""
        import grpc

        from envd_core.buildkit._pb import control_pb2

        try:
            resp = self._stub.ListWorkers(control_pb2.ListWorkersRequest(), timeout=timeout)
        except grpc.RpcError as e:
            raise self._fail(e) from None
        return [
            Worker(
                id=r.ID,
                labels=dict(r.Labels),
                platforms=tuple(platform_str(p) for p in r.platforms),
                gc_policy=tuple(
                    GCPolicy(g.all, g.keepDuration / 1e9, g.keepBytes, tuple(g.filters))
                    for g in r.GCPolicy
                ),
            )
            for r in resp.record
        ]

    def info(self, *, timeout: float | None = None) -> BuildkitVersion | None:
        """The daemon's version, or None when it predates ``Info`` (< 0.11, dockerd 20.10)."""
        import grpc

        from envd_core.buildkit._pb import control_pb2

        try:
            resp = self._stub.Info(control_pb2.InfoRequest(), timeout=timeout)
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                return None
            raise self._fail(e) from None
        v = resp.buildkitVersion
        return BuildkitVersion(package=v.package, version=v.version, revision=v.revision)

    def disk_usage(
        self, filters: Sequence[str] = (), *, timeout: float | None = None
    ) -> list[UsageRecord]:
        """Build-cache records, optionally filtered (buildctl ``--filter`` syntax)."""
        import grpc

        from envd_core.buildkit._pb import control_pb2

        try:
            resp = self._stub.DiskUsage(
                control_pb2.DiskUsageRequest(filter=list(filters)), timeout=timeout
            )
        except grpc.RpcError as e:
            raise self._fail(e) from None
        return [_usage(r) for r in resp.record]

    def prune(
        self,
        all: bool = False,
        keep_duration: float | None = None,
        keep_bytes: int | None = None,
        filters: Sequence[str] = (),
        *,
        timeout: float | None = None,
    ) -> list[UsageRecord]:
        """Prune build cache; returns the records the daemon reports as removed."""
        import grpc

        from envd_core.buildkit._pb import control_pb2

        req = control_pb2.PruneRequest(filter=list(filters), all=all)
        if keep_duration:
            req.keepDuration = int(keep_duration * 1e9)
        if keep_bytes:
            req.keepBytes = int(keep_bytes)
        try:
            return [_usage(r) for r in self._stub.Prune(req, timeout=timeout)]
        except grpc.RpcError as e:
            raise self._fail(e) from None

    # -- solve
    def solve(
        self,
        definition: ops_pb2.Definition | None,
        *,
        exporters: Sequence[Exporter | Mapping[str, Any]] = (),
        session: SolveSession | None = None,
        frontend: str | None = None,
        frontend_attrs: Mapping[str, str] | None = None,
        frontend_inputs: Mapping[str, ops_pb2.Definition] | None = None,
        cache_exports: Sequence[Exporter | Mapping[str, Any]] = (),
        cache_imports: Sequence[Exporter | Mapping[str, Any]] = (),
        entitlements: Sequence[str] = (),
        on_status: Callable[[control_pb2.StatusResponse], None] | None = None,
        ref: str | None = None,
        log_lines: int = _LOG_TAIL,
    ) -> dict[str, str]:
        """Run a build; return the exporter response (e.g. ``containerimage.digest``).

        Raises ``BuildError`` naming the failing step and carrying the last ``log_lines`` lines
        of its log (``stage``, ``exit_status``, ``log_tail``), or ``BuilderError`` when the
        daemon goes away.
        """
        import grpc

        from envd_core.buildkit._pb import control_pb2

        ref = ref or new_ref()
        exps = _entries(exporters)
        req = control_pb2.SolveRequest(Ref=ref)
        # Always send Cache, even empty: buildkitd v0.17-v0.18 dereference it unconditionally
        # (translateLegacySolveRequest) and crash the whole daemon when it is absent.
        req.Cache.SetInParent()
        if definition is not None:
            req.Definition.CopyFrom(definition)
        if exps:
            req.ExporterDeprecated = exps[0].type
            req.ExporterAttrsDeprecated.update(exps[0].attrs)
            for e in exps:
                req.Exporters.add(Type=e.type, Attrs=dict(e.attrs))
        if frontend:
            req.Frontend = frontend
        req.FrontendAttrs.update(dict(frontend_attrs or {}))
        for k, d in (frontend_inputs or {}).items():
            req.FrontendInputs[k].CopyFrom(d)
        for c in _entries(cache_exports):
            req.Cache.Exports.add(Type=c.type, Attrs=dict(c.attrs))
        for c in _entries(cache_imports):
            req.Cache.Imports.add(Type=c.type, Attrs=dict(c.attrs))
        req.Entitlements.extend(entitlements)

        if len(exps) > 1:
            self._check_multi_export(exps)
        if definition is not None:
            self._check_ops_supported(definition)
        trace = BuildTrace()
        timings.mark("solve checks")
        if session is not None:
            session.start(self.connection.channel)
            req.Session = session.id
            timings.mark("session")
        from envd_core.buildkit.watchdog import Progress, wait_solve

        progress = Progress()  # the no-progress watchdog's clock (see watchdog.py)
        try:
            # Status first, Solve right after, both in flight at once (see module doc).
            status_call = self._stub.Status(control_pb2.StatusRequest(Ref=ref))
            status_done = threading.Event()
            status_thread = threading.Thread(
                target=_pump_status,
                args=(status_call, trace, progress.wrap(on_status), status_done),
                name="envd-bk-status",
                daemon=True,
            )
            status_thread.start()
            future = self._stub.Solve.future(req)
            try:
                resp = wait_solve(future, self.connection, progress)
            except grpc.RpcError as e:
                _drain(status_call, status_done, status_thread, grace=1.0)
                raise self._solve_error(e, trace, log_lines) from None
            except BaseException:  # KeyboardInterrupt and friends: cancel the build
                future.cancel()
                _drain(status_call, status_done, status_thread, grace=0.0)
                raise
            timings.mark("solve (with push)")
            _drain(status_call, status_done, status_thread, grace=_STATUS_DRAIN_S)
            timings.mark("status drain")
            return dict(resp.ExporterResponse)
        finally:
            if session is not None:
                session.close()
                timings.mark("session close")

    def _check_multi_export(self, exps: Sequence[Exporter]) -> None:
        """Daemons before v0.13 read only fields 3/4: extra exporters would be dropped silently."""
        info = self.info()
        if info is None:
            too_old = True  # no Info RPC at all: older than v0.11
        else:
            version = _version_tuple(info.version)
            # v0.0.0 = a source build without version stamp: assume current.
            too_old = version is not None and (0, 0, 0) < version < (0, 13, 0)
        if too_old:
            raise BuildError(
                f"BuildKit at `{self.connection.target}` is older than v0.13 and runs one "
                f"exporter per build, but {len(exps)} were given "
                f"(`{', '.join(e.type for e in exps)}`); export once per build"
            )

    def _check_ops_supported(self, definition: ops_pb2.Definition) -> None:
        """merge/diff ops exist from v0.10; older daemons would fail with an obscure error."""
        from envd_core.buildkit._pb import ops_pb2 as pb
        from envd_core.buildkit.llb_ops import definition_ops

        kinds = {pb.Op.FromString(raw).WhichOneof("op") for raw in definition_ops(definition)}
        used = sorted(kind for kind in kinds if kind in ("merge", "diff"))
        if used and self.info() is None:
            raise BuildError(
                f"BuildKit at `{self.connection.target}` is older than v0.10 and has no "
                f"`{'`/`'.join(used)}` operation; use a newer buildkitd or build without it"
            )

    def _solve_error(
        self, e: grpc.RpcError, trace: BuildTrace, log_lines: int
    ) -> BaseException:
        code = e.code().name if e.code() is not None else ""
        if code == "UNAVAILABLE" and not self.connection.tls:
            # The daemon answered before the solve began: a broken link now means it went
            # away (killed, restarted), not an address or TLS problem.
            from envd_core.buildkit.watchdog import lost_daemon_error

            return lost_daemon_error(self.connection.target, rpc_error_text(e),
                                     trace.running_step())
        if code in _LINK_CODES:
            err = self._fail(e)
            step = trace.running_step()
            if step and hasattr(err, "message"):
                err.args = (f"{err.message} (during step `{step}`)",)
                err.message = err.args[0]
            return err
        # The message stays one line and names the step, not its (long, generated) command;
        # the daemon's text is kept as `detail`, the step's log as `log_tail`, never the hint.
        text = rpc_error_text(e).strip()
        first = (text.splitlines() or [""])[0]
        if code == "CANCELLED":
            return BuildError(f"build was cancelled: {first}", stage="solve", detail=first)
        failed = trace.failed_vertex()
        name = failed.name if failed is not None else None
        tail = tuple(trace.log_tail(failed.digest, log_lines)) if failed is not None else ()
        status = _exit_status(text)
        stage = _stage(text, name, status)
        if stage == "step" and name:
            msg = f"step `{name}` failed" + (
                f" with exit code {status}" if status is not None else f": {first}")
        elif name:
            msg = f"build failed at `{name}`: {_short(first)}"
        else:
            msg = f"build failed: {_short(first)}"
        hint = None
        if "exporter" in first and "could not be found" in first:
            hint = ("dockerd's built-in BuildKit (graphdriver store) offers only the "
                    f"`{'`, `'.join(DOCKERD_EXPORTERS)}` exporters; use `moby` there, "
                    "or a buildkitd")
        return BuildError(msg, hint=hint, stage=stage, step=name, exit_status=status,
                          log_tail=tail, detail=text)


_EXIT_RE = re.compile(r"(?:exit code|did not complete successfully: exit code):? (\d+)")


def _exit_status(text: str) -> int | None:
    """The exit code of a failed exec (``… exit code: 1``), if the daemon's text has one."""
    m = _EXIT_RE.search(text)
    return int(m.group(1)) if m else None


def _stage(text: str, step: str | None, status: int | None) -> str:
    """Where a build failed, from the daemon's text and the failed vertex (see BuildError)."""
    low = text.lower()
    if status is not None and ("executor failed" in low or "process " in low
                               or "did not complete successfully" in low):
        return "step"
    if "session" in low and ("not found" in low or "no active" in low or "closing" in low):
        return "session"
    if "failed to push" in low or (step or "").startswith("pushing"):
        return "push"
    if "export" in low or (step or "").startswith(("exporting", "writing image", "naming to")):
        return "export"
    if (step or "").startswith("docker-image://") or "failed to resolve source metadata" in low \
            or "failed to load cache key" in low or "failed to fetch" in low:
        return "pull"
    return "solve"


def _short(line: str, limit: int = 300) -> str:
    """The daemon's first line, without a long generated shell command in it."""
    line = short_error(line)
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _version_tuple(text: str) -> tuple[int, int, int] | None:
    """``v0.18.2`` -> (0, 18, 2); None when unparsable (dev builds say ``v0.0.0+unknown``)."""
    core = text.lstrip("v").split("+")[0].split("-")[0]
    try:
        major, minor, patch = (int(x) for x in core.split("."))
    except ValueError:
        return None
    return (major, minor, patch)


def _pump_status(
    call: Iterable[control_pb2.StatusResponse],
    trace: BuildTrace,
    on_status: Callable[[control_pb2.StatusResponse], None] | None,
    done: threading.Event,
) -> None:
    try:
        for resp in call:
            trace.update(resp)
            if on_status is not None:
                # A renderer bug must not kill the build.
                with contextlib.suppress(Exception):
                    on_status(resp)
    except Exception:  # noqa: BLE001 - cancelled or daemon gone: Solve reports that
        pass
    finally:
        done.set()


class _Cancellable(Protocol):
    def cancel(self) -> object: ...


def _drain(
    call: _Cancellable, done: threading.Event, thread: threading.Thread, *, grace: float
) -> None:
    """Let Status deliver its last messages, then cancel it and join the reader thread."""
    if grace > 0:
        done.wait(grace)
    if not done.is_set():
        call.cancel()
    thread.join(5)


def probe(connection: Connection, timeout: float = 5.0) -> dict[str, Any]:
    """Check a daemon without raising: reachability, version, platforms, workers, latency.

    Keys: reachable, version, platforms, workers, latency_ms, error, error_kind.
    """
    out: dict[str, Any] = {
        "reachable": False,
        "version": None,
        "platforms": [],
        "workers": 0,
        "latency_ms": None,
        "error": None,
        "error_kind": None,
    }
    client = BuildkitClient(connection)
    start = time.monotonic()
    try:
        workers = client.list_workers(timeout=timeout)
        out["latency_ms"] = round((time.monotonic() - start) * 1000, 1)
        out["reachable"] = True
        out["workers"] = len(workers)
        plats: list[str] = []
        for w in workers:
            plats.extend(p for p in w.platforms if p not in plats)
        out["platforms"] = plats
        v = client.info(timeout=timeout)
        out["version"] = v.version if v is not None else None
    except Exception as e:  # noqa: BLE001 - probe reports every failure; it never raises
        out["error"] = str(e)
        out["error_kind"] = e.kind if isinstance(e, EnvdError) else classify(e)
    return out
