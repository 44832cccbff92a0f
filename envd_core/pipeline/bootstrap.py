"""The daemon behind a builder: bootstrap it, make sure it runs before a build, remove it.

The library behind ``envd bootstrap``, ``envd builder rm`` and the build path's auto-bootstrap.
Everything goes through the :class:`~envd_core.builder.Builder` contract: ``can_bootstrap``
decides whether the builder manages a daemon, and ``needs_bootstrap``/``bootstrap``/``remove``
do the work. Progress is sent to a :data:`~envd_core.builder.Report` callback; the CLI prints it.
"""

from __future__ import annotations

import time
from typing import Any

import attrs

from envd_core.builder import (
    Builder,
    BuilderStatus,
    DaemonAction,
    DaemonChange,
    Report,
    silent,
)
from envd_core.errors import BuilderError, ErrorKind, UsageError


@attrs.define
class BootstrapOutcome:
    """What :func:`bootstrap_builder` did and found, for ``envd bootstrap`` to render."""

    builder: str
    url: str
    #: True when the builder type manages its daemon and :meth:`Builder.bootstrap` ran.
    managed: bool
    change: DaemonChange
    status: BuilderStatus
    #: Seconds from the first connect attempt until the daemon answered.
    waited_s: float

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; the keys ``envd bootstrap --format json`` prints."""
        return {
            "builder": self.builder,
            "url": self.url,
            "managed": self.managed,
            **self.change.to_json(),
            "running": self.status.reachable,
            "version": self.status.version,
            "platforms": list(self.status.platforms),
            "workers": self.status.workers,
            "waited_s": round(self.waited_s, 3),
        }


def bootstrap_builder(
    builder: Builder, *, timeout: float, force: bool = False, report: Report = silent
) -> BootstrapOutcome:
    """Start the builder's daemon if it manages one, then wait until BuildKit answers.

    ``timeout`` is the connect wait (``BUILDKIT_CONNECTING_TIMEOUT`` semantics: the daemon is
    asked ``ListWorkers`` until it answers or the time is up). A builder that cannot bootstrap
    (tcp, unix, moby-worker) is only connected to and checked, as upstream envd does. Raises a
    one-line :class:`BuilderError` when the daemon does not come up; ``force`` on a builder that
    manages no daemon is a :class:`UsageError` (there is nothing to recreate).
    """
    if builder.can_bootstrap:
        report(f"Bootstrapping the buildkitd of {builder.url}")
        change = builder.bootstrap(force=force, report=report)
    else:
        if force:
            raise UsageError(
                f"--force recreates a daemon envd started; builder type `{builder.name}` "
                "connects to a daemon it does not manage",
                hint="drop --force, or restart that daemon where it runs",
            )
        change = DaemonChange(
            DaemonAction.NONE,
            f"builder type `{builder.name}` connects to a running daemon; nothing to start",
        )
    report(f"Waiting for the buildkitd at {builder.url} (up to {timeout:g}s)")
    started = time.monotonic()
    if not builder.can_bootstrap:
        connection = builder.connect(timeout=timeout)
        connection.close()
    # A managed builder's bootstrap returned once its daemon answered ListWorkers: asking
    # `status` is enough (each connection to an exec'd transport starts a process).
    waited = time.monotonic() - started
    status = builder.status(timeout=timeout)
    if builder.can_bootstrap:
        waited = time.monotonic() - started
    if builder.can_bootstrap and not status.reachable:
        raise BuilderError(
            f"the buildkitd of `{builder.url}` was started but does not answer: {status.error}",
            kind=status.error_kind or ErrorKind.UNAVAILABLE,
            hint="see its log (`envd bootstrap` again waits for it)",
        )
    if not status.reachable:
        # it answered a moment ago: say what the second look found, in one line
        raise BuilderError(
            f"buildkitd at `{builder.url}` answered, then failed: {status.error}",
            kind=status.error_kind or ErrorKind.UNAVAILABLE,
        )
    return BootstrapOutcome(
        builder=builder.name, url=builder.url, managed=builder.can_bootstrap, change=change,
        status=status, waited_s=waited,
    )


@attrs.define
class RegistrySettings:
    """What :func:`apply_registry_settings` did with ``envd bootstrap``'s registry flags."""

    context: Any
    applied: bool
    #: The registry JSON the context's ``registry-config`` option now names (if applied).
    path: str | None
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"applied": self.applied, "registry_config": self.path}


def apply_registry_settings(
    contexts: Any, context: Any, *, path: str | None = None,
    document: dict[str, Any] | None = None,
) -> RegistrySettings:
    """Make registry settings the ``registry-config`` option of ``context``.

    ``path`` is a registry JSON the user gave (stored by absolute path, never copied);
    ``document`` one made from flags, written to ``<config dir>/bootstrap/<context>.registries
    .json`` (mode 0600). A builder type without that option (tcp, unix, moby-worker: envd
    does not start their daemons) gets nothing: the result says why, and nothing is written.
    """
    import json

    from envd_core.atomic import write_atomic
    from envd_core.contexts.store import config_dir

    builder = contexts.builder_for(context)
    declared = {option.name for option in builder.options_declared()}
    if "registry-config" not in declared:
        return RegistrySettings(
            context, False, None,
            f"warning: builder type `{builder.name}` does not start its daemon, so the "
            "registry settings are not applied; configure registries in that daemon's "
            "buildkitd.toml")
    if path is None:
        directory = config_dir() / "bootstrap"
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        target = directory / f"{context.name}.registries.json"
        write_atomic(target, (json.dumps(document, indent=2) + "\n").encode(), mode=0o600)
        path = str(target)
    if context.builder_options.get("registry-config") == path:
        return RegistrySettings(context, True, path,
                                f"registry settings: {path} (context `{context.name}` "
                                "already names this file)")
    updated = contexts.update(context.name, builder_options={"registry-config": path})
    return RegistrySettings(
        updated, True, path,
        f"registry settings: {path}, stored as option registry-config of context "
        f"`{context.name}` (a daemon started without them is reported stale; --force "
        "recreates it)")


def ensure_running(
    builder: Builder, *, auto_bootstrap: bool = True, report: Report = silent
) -> DaemonChange | None:
    """Before a build's first solve: bootstrap a managed daemon that is missing or stopped.

    Returns what :meth:`Builder.bootstrap` did, or ``None`` when nothing was needed (the type
    manages no daemon, or it runs). With ``auto_bootstrap`` false a missing daemon is a one-line
    :class:`BuilderError` naming ``envd bootstrap``; the build never starts one silently.
    """
    if not builder.can_bootstrap or not builder.needs_bootstrap():
        return None
    if not auto_bootstrap:
        raise BuilderError(
            f"the buildkitd of `{builder.url}` is not running",
            hint="start it with `envd bootstrap`, or build without --no-bootstrap",
            kind=ErrorKind.NOT_FOUND,
        )
    report(f"The buildkitd of {builder.url} is not running: bootstrapping it")
    return builder.bootstrap(report=report)


def remove_builder(
    builder: Builder, *, keep_state: bool = False, report: Report = silent
) -> DaemonChange:
    """Stop and remove the daemon a builder started (``envd builder rm``).

    A builder type that manages no daemon has nothing envd may remove: that is a one-line
    :class:`BuilderError` of kind ``unsupported`` rather than a silent success.
    """
    if not builder.can_bootstrap:
        raise BuilderError(
            f"builder `{builder.url}` was not started by envd (type `{builder.name}` connects "
            "to a daemon it does not manage); there is nothing to remove",
            hint="stop that daemon where it runs; `envd context rm` forgets the context",
            kind=ErrorKind.UNSUPPORTED,
        )
    keeping = " (keeping its state)" if keep_state else ""
    report(f"Removing the buildkitd of {builder.url}{keeping}")
    return builder.remove(keep_state=keep_state, report=report)
