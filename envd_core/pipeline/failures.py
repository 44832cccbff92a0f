"""Why a build failed, in words: a failed solve or push turned into its explained error.

:func:`explain_failure` applies the failure-cause table (:mod:`envd_core.pipeline.causes`) to a
:class:`BuildError`; :func:`explaining` does it around a solve and shows the result in the
progress view; :func:`link_lost` turns a connection dropped mid-solve into a failed build.
Split out of :mod:`envd_core.pipeline.execute`, which re-exports the public names.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from typing import Any

from envd_core.builder import Builder
from envd_core.errors import BuilderError, BuildError, EnvdError
from envd_core.pipeline.causes import BUILTIN_CAUSES, Cause


def explain_failure(
    exc: BuildError, *, causes: Sequence[Cause] = BUILTIN_CAUSES, export_errors: Sequence[str] = (),
    target: str | None = None,
) -> BuildError:
    """``exc`` with the recognised cause's reason in its message and its fix as the hint.

    ``export_errors`` are this side's reasons for a failed export (the daemon only says EOF);
    ``target`` is the image name being pushed, naming the registry when the daemon's text
    does not.
    """
    from envd_core.pipeline.causes import diagnose

    texts = [exc.detail or exc.message, *exc.log_tail, *export_errors]
    facts: dict[str, str] = {"step": exc.step or ""}
    registry = _registry_in(texts) or (_registry_of(target) if target else None)
    if registry:
        facts["registry"] = registry
    if exc.step and exc.step.startswith("docker-image://"):
        facts["image"] = exc.step.removeprefix("docker-image://")
    found = diagnose(exc.stage, texts, facts=facts, causes=causes)
    message = exc.message
    if export_errors:
        message = f"{message} ({'; '.join(export_errors)})"
    hint = exc.hint
    if found is not None:
        # A step's line keeps its name and exit code; elsewhere the daemon's wording (kept in
        # `detail`) gives way to what failed and why.
        if exc.stage == "step":
            message = f"{message}: {found.reason}"
        else:
            local = f" ({'; '.join(export_errors)})" if export_errors else ""
            message = f"{_what_failed(exc, target)}: {found.reason}{local}"
        hint = found.hint
    elif exc.stage == "step" and hint is None:
        hint = ("the step's log above says why (`--log-lines N` shows more of it; "
                "`--progress plain` all of it)")
    return BuildError(message, hint=hint, kind=exc.kind, stage=exc.stage, step=exc.step,
                      exit_status=exc.exit_status, log_tail=exc.log_tail,
                      cause=found.cause if found else None, detail=exc.detail)


def _what_failed(exc: BuildError, target: str | None) -> str:
    """The start of a non-step failure's line: what could not be done."""
    if exc.stage == "pull" and exc.step and exc.step.startswith("docker-image://"):
        return f"cannot pull base image `{exc.step.removeprefix('docker-image://')}`"
    if exc.stage == "push":
        return f"cannot push `{target}`" if target else "cannot push the image"
    if exc.stage == "export":
        return "cannot export the image"
    return f"build failed at `{exc.step}`" if exc.step else "build failed"


def _registry_in(texts: Sequence[str]) -> str | None:
    """The registry host a daemon's error names (``https://HOST/v2/…``), if any."""
    for text in texts:
        m = re.search(r"https?://([^/\s\"']+)/v2/", text)
        if m:
            return m.group(1)
    return None


def _registry_of(image: str) -> str | None:
    """The registry host of an image name (``host:5000/repo:tag``), when it names one."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return None


@contextlib.contextmanager
def explaining(
    session: Any, printer: Any, causes: Sequence[Cause], target: str | None
) -> Iterator[None]:
    """Turn a failed solve into its explained error and report it in the progress view."""
    try:
        yield
    except BuildError as exc:
        err = explain_failure(exc, causes=causes, export_errors=session.export_errors,
                              target=target)
        printer.failed(err.to_dict())
        raise err from None
    except BuilderError as exc:
        # The link to the daemon dropped mid-solve (a killed daemon or container, a proxy
        # cutting the stream): a connection error, which must read as a failed build.
        err = explain_failure(link_lost(exc), causes=causes, target=target)
        printer.failed(err.to_dict())
        raise err from None


def link_lost(exc: EnvdError) -> BuildError:
    """A connection error raised during a solve, as a ``session``-stage :class:`BuildError`.

    The transport's own wording (``closed the connection without answering; if it requires
    TLS…``) is written for a connect and misleads mid-build; it is kept as ``detail`` for the
    cause table and for ``--debug``, and the step that was running becomes ``step``.
    """
    m = re.search(r"\(during step `(?P<step>[^`]+)`\)", exc.message)
    return BuildError(exc.message, hint=exc.hint, kind=exc.kind, stage="session",
                      step=m.group("step") if m else None, detail=exc.message)


def push_after_export(builder: Builder, name: str, printer: Any,
                       causes: Sequence[Cause]) -> str | None:
    """Push what a ``moby`` export left in dockerd's store; a failure goes through the table."""
    try:
        return builder.push(name)
    except BuildError:
        raise
    except EnvdError as exc:
        failure = BuildError(exc.message, hint=exc.hint, kind=exc.kind, stage="push",
                             detail=exc.message)
        err = explain_failure(failure, causes=causes, target=name)
        printer.failed(err.to_dict())
        raise err from None
