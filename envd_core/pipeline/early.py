"""Connecting to the builder while build.envd is evaluated (see :class:`EarlyConnection`)."""

from __future__ import annotations

import os
from typing import Any

from envd_core.builder import Builder


class EarlyConnection:
    """The builder's connection, opened in a thread while build.envd is evaluated.

    A cached rebuild spends most of its time before the solve: Starlark, the LLB, importing grpc
    and the session, connecting. Importing and connecting wait on the disk and the network, so a
    thread does them while the main thread evaluates the build file. Only for a builder that
    manages no daemon, or one whose bootstrap check may run here too (``early_bootstrap_check``;
    a daemon that needs bootstrapping is left to the build path, which connects after). A
    failure is raised where the connection is taken, in the order the user would have seen it;
    a build that never reaches its solve closes the connection.
    """

    def __init__(self, builder: Builder) -> None:
        import threading

        self._builder = builder
        #: Opened once no evaluation will fork any more (:meth:`allow_connect`): a gRPC
        #: channel's core threads running while build.envd's evaluation forks its isolated
        #: child made that child crash (SIGSEGV). Imports and the bootstrap check (plain
        #: HTTP, e.g. a pod listing) go ahead before it.
        self._gate = threading.Event()
        self._connection: Any = None
        self._error: BaseException | None = None
        self._taken = False
        self._thread = threading.Thread(target=self._run, name="envd-early-connect",
                                        daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            # the modules the solve needs, imported while the build file evaluates
            import envd_core.buildkit.client
            import envd_core.buildkit.progress
            import envd_core.buildkit.session  # noqa: F401
            from envd_core.buildkit.transport import connect_timeout

            if self._builder.can_bootstrap and self._builder.needs_bootstrap():
                return  # bootstrapped by the build path first; take() gives None
            self._gate.wait()
            self._connection = self._builder.connect(timeout=connect_timeout())
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread by take()
            self._error = exc

    def allow_connect(self, *, after_evaluation_forks: bool = False) -> None:
        """Let the thread connect: now, or once the coming evaluation has forked its child."""
        if after_evaluation_forks:
            from envd_core.envdfile.lang.isolate import after_next_fork

            after_next_fork(self._gate.set)
        else:
            self._gate.set()

    def take(self) -> Any:
        """The connection (once), None if the daemon needs bootstrapping; raises what
        connecting raised."""
        self._gate.set()
        self._thread.join()
        self._taken = True
        if self._error is not None:
            raise self._error
        return self._connection

    def discard(self) -> None:
        """Close the connection if nobody took it."""
        if self._taken:
            return
        self._gate.set()
        self._thread.join()
        self._taken = True
        if self._connection is not None:
            self._connection.close()


def early_connect_enabled() -> bool:
    """``ENVD_EARLY_CONNECT=0`` turns the early connection off (to measure it, or if a builder
    plugin's ``connect`` is not thread-safe)."""
    return os.environ.get("ENVD_EARLY_CONNECT", "1") not in ("0", "false", "no")
