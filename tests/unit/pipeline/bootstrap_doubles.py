"""A builder that manages a pretend daemon and records every contract call (no daemon).

Shared by the bootstrap tests of this folder (this module holds no tests)."""

from __future__ import annotations

from typing import Any, ClassVar

from envd_core.builder import Builder, BuilderStatus, DaemonAction, DaemonChange, Report, silent
from envd_core.errors import BuilderError, ErrorKind


class _Closable:
    def close(self) -> None:
        RecordingBuilder.calls.append(("close",))


class RecordingBuilder(Builder):
    """Manages a pretend daemon; records every contract call with its arguments."""

    name = "recording"
    summary = "records contract calls"
    can_bootstrap = True
    calls: ClassVar[list[tuple[Any, ...]]] = []
    #: what the pretend daemon is: "missing", "running"
    daemon: ClassVar[str] = "missing"
    connect_fails: ClassVar[bool] = False

    def connect(self, *, timeout: float) -> Any:
        self.calls.append(("connect", timeout))
        if self.connect_fails or self.daemon != "running":
            raise BuilderError(f"no buildkitd at `{self.url}`", kind=ErrorKind.REFUSED)
        return _Closable()

    def status(self, *, timeout: float = 3.0) -> BuilderStatus:
        self.calls.append(("status", timeout))
        if self.connect_fails:
            return BuilderStatus(False, error=f"no buildkitd at `{self.url}`",
                                 error_kind="refused")
        if self.daemon != "running":
            return BuilderStatus(False, error="stopped", error_kind="refused")
        return BuilderStatus(True, version="v9.9.9", platforms=["linux/amd64"], workers=1)

    def needs_bootstrap(self) -> bool:
        self.calls.append(("needs_bootstrap",))
        return self.daemon != "running"

    def bootstrap(self, *, force: bool = False, report: Report = silent) -> DaemonChange:
        self.calls.append(("bootstrap", force))
        report("creating container recording-daemon")
        was = type(self).daemon
        type(self).daemon = "running"
        action = DaemonAction.REUSED if was == "running" else DaemonAction.CREATED
        return DaemonChange(action, "container recording-daemon")

    def remove(self, *, keep_state: bool = False, report: Report = silent) -> DaemonChange:
        self.calls.append(("remove", keep_state))
        report("removing container recording-daemon")
        was = type(self).daemon
        type(self).daemon = "missing"
        return DaemonChange(DaemonAction.ABSENT if was == "missing" else DaemonAction.REMOVED)
