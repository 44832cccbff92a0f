"""Bootstrap, connect to and remove the BuildKit container.

Bootstrap handles every state a container by that name can be in (upstream envd's rules,
reference §4): ``running`` is reused, ``paused`` unpaused, ``exited``/``created`` started,
``restarting`` waited for, ``dead`` removed and recreated, ``removing`` waited for and then
recreated. A container whose image or configuration no longer matches the context is *stale*:
it is reported, and recreated only with ``force`` (its cache volume survives).

Creation runs privileged when the engine allows it. Where the engine refuses (``unable to apply
caps``: a host whose bounding set lacks a capability, or a policy), it falls back to the
``restricted`` set (see :data:`.engine.SECURITY`) and says so. A failure on the way removes what
this call created: no half-made container or volume stays behind.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from envd_docker_client.hijack import ExecStream

from envd_core.buildkit.errors import BuildkitConnectionError
from envd_core.errors import BuilderError, ErrorKind
from envd_docker_container import engine as eng
from envd_docker_container.report import Reporter
from envd_docker_container.settings import SOCKET, DaemonSpec

if TYPE_CHECKING:
    from envd_core.buildkit.transport import Connection

#: Bootstrap waits this long for a new daemon unless BUILDKIT_CONNECTING_TIMEOUT says otherwise:
#: a cold start on a busy host takes longer than upstream's 5 s connect default.
BOOTSTRAP_READY_DEFAULT = 30.0
_FALLBACK_MARKERS = ("unable to apply caps", "operation not permitted", "privileged mode is")


@dataclass
class Outcome:
    """What a bootstrap did; ``action`` is created/reused/started/unpaused/recreated."""

    container: str
    action: str
    image: str
    security: str | None = None
    volume: str | None = None
    stale: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def ready_timeout() -> float:
    """BUILDKIT_CONNECTING_TIMEOUT (a Go duration) when set, else 30 s."""
    from envd_core.buildkit.transport import TIMEOUT_ENV, connect_timeout

    if os.environ.get(TIMEOUT_ENV, "").strip():
        return connect_timeout()
    return BOOTSTRAP_READY_DEFAULT


def state_of(info: dict[str, Any]) -> str:
    return str((info.get("State") or {}).get("Status") or "unknown")


def owned(info: dict[str, Any]) -> bool:
    labels = (info.get("Config") or {}).get("Labels") or {}
    return labels.get(eng.LABEL_OWNER) == eng.OWNER


def stale_reasons(engine: eng.Engine, info: dict[str, Any], spec: DaemonSpec) -> list[str]:
    """Why the container no longer matches ``spec`` (empty: it matches, or is not ours)."""
    if not owned(info):
        return []
    labels = (info.get("Config") or {}).get("Labels") or {}
    reasons = []
    if labels.get(eng.LABEL_IMAGE) != spec.image:
        reasons.append(f"its image is `{labels.get(eng.LABEL_IMAGE)}`, the context asks for "
                       f"`{spec.image}`")
    else:
        current = engine.image_id(spec.image)
        if current is not None and current != info.get("Image"):
            reasons.append(f"image `{spec.image}` now points to a newer image")
    if labels.get(eng.LABEL_FINGERPRINT) != spec.fingerprint and not reasons:
        reasons.append("the builder options or the buildkitd config changed")
    return reasons


def dial_argv(socket: str = SOCKET) -> list[str]:
    return ["buildctl", "--addr", socket, "dial-stdio"]


def socket_of(info: dict[str, Any] | None) -> str:
    """Where the container's buildkitd listens (its label; the default for older ones)."""
    labels = ((info or {}).get("Config") or {}).get("Labels") or {}
    return str(labels.get(eng.LABEL_SOCKET) or SOCKET)


class Dialer:
    """``dial()`` for the bridge: one ``buildctl dial-stdio`` exec per gRPC connection."""

    def __init__(self, engine: eng.Engine, container: str, timeout: float,
                 socket: str = SOCKET) -> None:
        self.engine = engine
        self.container = container
        self.timeout = timeout
        self.socket = socket
        self.last: ExecStream | None = None

    def __call__(self) -> ExecStream:
        stream = self.engine.exec_stream(self.container, dial_argv(self.socket),
                                         timeout=self.timeout)
        self.last = stream
        return stream

    def explain(self) -> str:
        """The last exec's stderr, last line (why dial-stdio gave up), or ``""``."""
        text = self.last.stderr.strip() if self.last is not None else ""
        return text.splitlines()[-1] if text else ""


def open_connection(engine: eng.Engine, container: str, *, timeout: float,
                    wait: bool = True, socket: str = SOCKET) -> Connection:
    """A gRPC connection to the container's buildkitd over exec'd ``buildctl dial-stdio``."""
    from envd_core.buildkit.transport import connect_bridge, wait_ready

    dialer = Dialer(engine, container, timeout, socket)
    conn = connect_bridge(dialer, target=f"docker-container://{container}", timeout=timeout,
                          wait=False)
    if not wait:
        return conn
    try:
        wait_ready(conn, timeout)
    except BuilderError as exc:
        conn.close()
        why = dialer.explain()
        if why:
            raise BuildkitConnectionError(
                f"BuildKit in container `{container}` does not answer: {why}",
                kind=exc.kind or ErrorKind.UNAVAILABLE,
                hint=f"see `docker logs {container}`, or recreate it with bootstrap --force",
            ) from None
        raise
    return conn


def wait_until_ready(engine: eng.Engine, container: str, timeout: float, *,
                     theirs: bool = False) -> None:
    """Poll until buildkitd in ``container`` answers ListWorkers; one line on timeout.

    ``theirs``: another process is bootstrapping it, so it may vanish for a moment (its
    privileged attempt removed before the restricted one is created)."""
    from envd_core.buildkit.transport import wait_ready

    deadline = time.monotonic() + timeout
    last = ""
    while True:
        info = engine.inspect(container)
        if info is None and not theirs:
            raise BuilderError(f"container `{container}` disappeared while starting")
        state = state_of(info) if info is not None else "created"
        if theirs and state == "removing":
            # their refused privileged attempt on its way out; the restricted one follows
            state = "created"
        if state not in ("running", "restarting", "created"):
            logs = engine.logs_tail(container)
            raise BuilderError(
                f"BuildKit container `{container}` stopped while starting ({state}): "
                f"{_last_line(logs) or 'no log output'}",
                hint=f"see `docker logs {container}`",
            )
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        if state == "running":
            dialer = Dialer(engine, container, timeout=min(remaining, 5.0),
                            socket=socket_of(info))
            from envd_core.buildkit.transport import connect_bridge

            conn = connect_bridge(dialer, target=f"docker-container://{container}", wait=False)
            try:
                wait_ready(conn, min(remaining, 2.0))
                return
            except BuilderError as exc:
                last = dialer.explain() or exc.message
            finally:
                conn.close()
        time.sleep(min(0.2, max(0.0, deadline - time.monotonic())))
    raise BuildkitConnectionError(
        f"timeout {timeout:g}s: BuildKit in container `{container}` did not become ready"
        + (f" ({last})" if last else ""),
        kind=ErrorKind.TIMEOUT,
        hint=f"see `docker logs {container}`; raise BUILDKIT_CONNECTING_TIMEOUT on a slow host",
    )


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else ""


def _wait_gone(engine: eng.Engine, container: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while engine.inspect(container) is not None:
        if time.monotonic() > deadline:
            raise BuilderError(f"container `{container}` is still being removed after {timeout:g}s")
        time.sleep(0.2)


def ensure_running(engine: eng.Engine, container: str, spec: DaemonSpec, *, force: bool,
                   report: Reporter, timeout: float | None = None) -> Outcome:
    """Make ``container`` a running, ready buildkitd as ``spec`` says; see the module doc."""
    started = time.monotonic()
    timeout = ready_timeout() if timeout is None else timeout
    info = engine.inspect(container)
    outcome = Outcome(container=container, action="reused", image=spec.image,
                      volume=spec.volume)
    recreate = False
    if info is not None:
        state = state_of(info)
        labels = (info.get("Config") or {}).get("Labels") or {}
        outcome.security = labels.get(eng.LABEL_SECURITY)
        if state == "removing":
            report(f"container `{container}` is being removed; waiting to recreate it")
            _wait_gone(engine, container)
            info, recreate = None, True
        elif state == "dead":
            report(f"container `{container}` is dead; removing and recreating it")
            engine.remove(container)
            info, recreate = None, True
        else:
            outcome.stale = stale_reasons(engine, info, spec)
            if force and not owned(info):
                raise BuilderError(
                    f"container `{container}` was not created by envd; it is not recreated",
                    kind=ErrorKind.CONFLICT,
                    hint=f"remove it yourself (`docker rm -f {container}`) and bootstrap again",
                )
            if force:
                report(f"recreating container `{container}`"
                       + (f": {outcome.stale[0]}" if outcome.stale else " (--force)"))
                engine.remove(container)
                info, recreate = None, True
            else:
                if outcome.stale:
                    report(f"container `{container}` is stale: {'; '.join(outcome.stale)}; "
                           "bootstrap with --force recreates it (the cache volume is kept)")
                _revive(engine, container, state, report, outcome)
    if info is None:
        if _create(engine, container, spec, report, outcome, timeout):
            outcome.action = "recreated" if recreate else "created"
    else:
        wait_until_ready(engine, container, timeout)
    outcome.seconds = round(time.monotonic() - started, 3)
    return outcome


def _revive(engine: eng.Engine, container: str, state: str, report: Reporter,
            outcome: Outcome) -> None:
    """Bring an existing container to ``running`` (reuse, unpause or start)."""
    if state == "paused":
        report(f"unpausing container `{container}`")
        engine.unpause(container)
        outcome.action = "unpaused"
    elif state in ("exited", "created"):
        report(f"starting container `{container}` ({state})")
        try:
            engine.start(container)
        except eng.EngineError as exc:
            raise BuilderError(
                f"cannot start container `{container}`: {exc.message}",
                hint="bootstrap with --force recreates it",
            ) from None
        outcome.action = "started"
    elif state == "restarting":
        report(f"container `{container}` is restarting; waiting for it")
        outcome.action = "reused"


def _create(engine: eng.Engine, container: str, spec: DaemonSpec, report: Reporter,
            outcome: Outcome, timeout: float) -> bool:
    """Pull if needed, create the volume and the container, start it; undo on failure.

    Returns False when a parallel bootstrap created the container first (then reused)."""
    if engine.image_id(spec.image) is None:
        report(f"pulling {spec.image}")
        engine.pull(spec.image, report)
    made_volume = False
    if spec.volume is not None and engine.volume_labels(spec.volume) is None:
        engine.create_volume(spec.volume, {eng.LABEL_OWNER: eng.OWNER})
        made_volume = True
    modes = ["privileged", "restricted"] if spec.security == "auto" else [spec.security]
    try:
        for index, mode in enumerate(modes):
            labels = {eng.LABEL_OWNER: eng.OWNER, eng.LABEL_IMAGE: spec.image,
                      eng.LABEL_FINGERPRINT: spec.fingerprint, eng.LABEL_SECURITY: mode,
                      eng.LABEL_SOCKET: spec.socket}
            report(f"creating container `{container}` from {spec.image} ({mode})")
            try:
                engine.create(container, image=spec.image,
                              entrypoint=spec.entrypoint,
                              command=spec.command, labels=labels, network=spec.network,
                              volume=spec.volume, state_dir=spec.state_dir, security=mode)
            except eng.EngineError as exc:
                if exc.status != 409:
                    raise
                # Another envd (a parallel build) created it first: use theirs.
                made_volume = False
                report(f"container `{container}` was created meanwhile; waiting for it")
                wait_until_ready(engine, container, timeout, theirs=True)
                return False
            try:
                engine.put_files(container, spec.files, owner=spec.file_owner)
                engine.start(container)
            except eng.EngineError as exc:
                engine.remove(container)
                refused = any(m in exc.message.lower() for m in _FALLBACK_MARKERS)
                if refused and index + 1 < len(modes):
                    report(f"the engine refused a {mode} container ({_reason(exc.message)}); "
                           f"using `{modes[index + 1]}` instead: CAP_SYS_ADMIN, seccomp, "
                           "AppArmor and masked paths unconfined")
                    continue
                raise
            outcome.security = mode
            break
        try:
            wait_until_ready(engine, container, timeout)
        except BuilderError:
            engine.remove(container)
            raise
    except BaseException:
        if made_volume and spec.volume is not None:
            engine.remove_volume(spec.volume)
        raise
    report(f"BuildKit is running at docker-container://{container} ({outcome.security})")
    return True


def _reason(message: str) -> str:
    lowered = message.lower()
    for marker in _FALLBACK_MARKERS:
        if marker in lowered:
            return marker
    return message[:120]


def remove(engine: eng.Engine, container: str, volume: str | None, *, volumes: bool,
           report: Reporter) -> list[str]:
    """Stop and remove the container (if envd made it), and its volume when asked."""
    removed: list[str] = []
    info = engine.inspect(container)
    if info is not None:
        if not owned(info):
            raise BuilderError(
                f"container `{container}` was not created by envd; it is left alone",
                kind=ErrorKind.CONFLICT,
                hint=f"remove it with `docker rm -f {container}` if you mean to",
            )
        if state_of(info) in ("running", "paused", "restarting"):
            report(f"stopping container `{container}`")
        engine.remove(container)
        removed.append(f"container {container}")
    if volumes and volume is not None:
        labels = engine.volume_labels(volume)
        if labels is not None:
            if labels.get(eng.LABEL_OWNER) != eng.OWNER:
                report(f"volume `{volume}` was not created by envd; kept")
            else:
                engine.remove_volume(volume)
                removed.append(f"volume {volume}")
    return removed

