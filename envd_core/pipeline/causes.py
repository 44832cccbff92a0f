"""The common causes of failed builds, as data: what to look for, what to say, what to do.

A :class:`Cause` is a row: the stages it applies to, regular expressions searched in the
daemon's error text and the failed step's log, and two templates (the reason and the hint)
that may use the expressions' named groups (``{package}``, ``{host}``…) and the failure's
facts (``{step}``, ``{index}``). :func:`diagnose` returns the first row that matches, so a
specific row goes before a general one (TLS before "package not found": pip says both when it
cannot verify the index).

The table is extensible without code in the core: a plugin returns more rows from the
``envd_build_failure_causes`` hook; theirs are tried before the built-in ones, so a vendor can
say something more specific about its own mirror or registry.

This module is presentation-free: it returns text, the CLI decides where it goes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: Where a build can fail (``BuildError.stage``).
STAGES = ("step", "pull", "solve", "export", "push", "session")
_ALL = STAGES


@dataclass(frozen=True)
class Cause:
    """One recognised cause of a failed build.

    Example, a vendor's row for its own package mirror::

        Cause(
            name="corp-mirror-down",
            patterns=(r"mirror\\.corp\\.example.*(?:502|503)",),
            reason="the company package mirror is down",
            hint="see https://status.corp.example, or build with --use-proxy",
        )
    """

    #: A short stable id, reported as ``cause`` in JSON (``tls-verify``).
    name: str
    #: Regular expressions (case-insensitive); any match selects the row.
    patterns: tuple[str, ...]
    #: What went wrong, for the ``envd:`` line. May use named groups and the facts.
    reason: str
    #: What to do, for the ``hint:`` line. Same placeholders.
    hint: str
    #: The stages this row applies to.
    stages: tuple[str, ...] = _ALL
    _compiled: tuple[re.Pattern[str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.name or not self.patterns:
            raise ValueError("a Cause needs a name and at least one pattern")
        unknown = set(self.stages) - set(STAGES)
        if unknown:
            raise ValueError(f"Cause `{self.name}`: unknown stages {sorted(unknown)}")
        object.__setattr__(
            self, "_compiled", tuple(re.compile(p, re.IGNORECASE) for p in self.patterns)
        )

    def match(self, text: str) -> dict[str, str] | None:
        """The named groups of the first pattern found in ``text``, or ``None``."""
        for pattern in self._compiled:
            m = pattern.search(text)
            if m is not None:
                return {k: v for k, v in m.groupdict().items() if v is not None}
        return None


@dataclass(frozen=True)
class Diagnosis:
    """A matched cause with its texts filled in."""

    cause: str
    reason: str
    hint: str


class _Facts(dict[str, str]):
    """Template values; an unknown placeholder stays visible instead of raising."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


_CA_HINT = (
    "a proxy or a private CA is probably intercepting HTTPS: give the build its CA with "
    "`envd build --ca-bundle /etc/ssl/certs/ca-certificates.crt` (or once per context: "
    "`envd context update NAME --builder-opt ca-bundle=PATH`)"
)

#: The built-in rows, most specific first.
BUILTIN_CAUSES: tuple[Cause, ...] = (
    Cause(
        name="tls-verify",
        stages=("step",),
        patterns=(
            r"CERTIFICATE_VERIFY_FAILED",
            r"certificate verify failed",
            r"self[- ]signed certificate in certificate chain",
            r"unable to get local issuer certificate",
            r"server certificate verification failed",
            r"x509: certificate signed by unknown authority",
        ),
        reason="TLS certificate verification failed inside the step",
        hint=_CA_HINT,
    ),
    Cause(
        name="registry-tls",
        stages=("pull", "solve", "export", "push"),
        patterns=(r"x509: certificate signed by unknown authority",
                  r"tls: failed to verify certificate"),
        reason="the builder does not trust the registry's TLS certificate",
        hint="add the registry's CA to the builder's buildkitd.toml "
             '(`[registry."HOST"] ca = ["/path/ca.pem"]`) and restart it',
    ),
    Cause(
        name="no-space",
        patterns=(r"no space left on device", r"\bENOSPC\b", r"disk quota exceeded"),
        reason="the builder ran out of disk space",
        hint="free the builder's cache with `envd prune` (or `envd prune --all`), "
             "or give its daemon a larger disk",
    ),
    Cause(
        name="dns",
        patterns=(
            r"Temporary failure in name resolution",
            r"Name or service not known",
            r"Could not resolve (?:host|proxy):? ?'?(?P<host>[\w.-]+)?",
            r"lookup (?P<host>[\w.-]+)(?: on [^:]+:\d+)?: no such host",
            r"NameResolutionError",
            r"Failed to resolve '(?P<host>[\w.-]+)'",
        ),
        reason="a host name{host_part} did not resolve on the builder",
        hint="the builder has no DNS for it: a remote builder may need `--use-proxy` "
             "(HTTP_PROXY/HTTPS_PROXY) or a package mirror it can reach",
    ),
    Cause(
        name="network",
        patterns=(r"Network is unreachable", r"Connection timed out",
                  r"Failed to establish a new connection", r"connection refused"),
        reason="the builder could not reach the network",
        hint="a remote builder may need `--use-proxy` (HTTP_PROXY/HTTPS_PROXY) "
             "or a package mirror it can reach",
        stages=("step",),
    ),
    Cause(
        name="apt-package-not-found",
        stages=("step",),
        patterns=(r"E: Unable to locate package (?P<package>\S+)",
                  r"E: Package '(?P<package>[^']+)' has no installation candidate"),
        reason="apt found no package `{package}` in the image's apt sources",
        hint="check the name in install.apt_packages() (`apt-cache search {package}` in the "
             "base image lists close names)",
    ),
    Cause(
        name="apt-mirror",
        stages=("step",),
        patterns=(
            r"E: Failed to fetch (?P<url>\S+)",
            r"Some index files failed to download",
            r"Hash Sum mismatch",
            r"Release file for \S+ is not valid yet",
            r"does not have a Release file",
        ),
        reason="an apt mirror failed{url_part}",
        hint="retry later, or point the base image's apt sources at another mirror "
             "(a remote builder may also need `--use-proxy`)",
    ),
    Cause(
        name="package-not-found",
        stages=("step",),
        patterns=(r"No matching distribution found for (?P<package>[^\s;]+)",),
        reason="pip found no package `{package}` on {index}",
        hint="check the name and version in install.python_packages(); a private index is "
             "set with PIP_INDEX_URL or a pip.conf in the base image",
    ),
    Cause(
        name="unauthorized",
        stages=("pull", "solve", "export", "push"),
        patterns=(r"401 Unauthorized", r"no basic auth credentials",
                  r"unauthorized: authentication required", r"pull access denied"),
        reason="the registry {registry_part}refused access (401)",
        hint="log in with `docker login {registry}` (envd reads the docker config, "
             "DOCKER_CONFIG, and its credential helpers)",
    ),
    Cause(
        name="image-not-found",
        stages=("pull", "solve"),
        patterns=(r"(?P<image>[\w.:/@-]+): not found", r"manifest unknown",
                  r"repository does not exist"),
        reason="the base image {image_part}was not found",
        hint="check base(image=...) in build.envd: registry, name and tag",
    ),
    Cause(
        name="session",
        stages=("session", "solve", "export"),
        patterns=(r"no active sessions?", r"session \S+ not found",
                  r"failed to get session", r"grpc: the client connection is closing"),
        reason="the build's session with envd broke",
        hint="the link between envd and the builder dropped mid-build; run the build again "
             "(a proxy in between may cut long streams)",
    ),
    Cause(
        name="builder-lost",
        stages=("session",),
        patterns=(
            (r"BuildKit at `(?P<target>[^`]+)` (?:is unavailable|closed the connection|"
             r"did not answer|went away during the build)"),
            r"cannot connect to BuildKit at `(?P<target>[^`]+)`",
        ),
        reason="the connection to the builder `{target}` dropped mid-build",
        hint="its daemon may have stopped or restarted: check it with `envd context ls "
             "--status` (`envd bootstrap` starts a daemon envd manages), then build again",
    ),
    Cause(
        name="registry-unreachable",
        stages=("pull", "export", "push"),
        patterns=(r"dial tcp (?P<address>[\w.:\[\]-]+): connect: connection refused",
                  r"dial tcp (?P<address>[\w.:\[\]-]+): (?:i/o timeout|connect: no route)"),
        reason="the registry at `{address}` did not accept a connection",
        hint="check the registry's address and that it runs; the daemon that pushes (here: "
             "the builder's) must reach it, not only this machine",
    ),
)


def _facts(groups: dict[str, str], base: dict[str, str]) -> _Facts:
    facts = _Facts(base)
    facts.update(groups)
    # Optional parts read naturally whether or not the pattern captured them.
    facts["host_part"] = f" (`{groups['host']}`)" if groups.get("host") else ""
    facts["url_part"] = f" ({groups['url']})" if groups.get("url") else ""
    registry = groups.get("registry") or base.get("registry") or ""
    facts["registry"] = registry or "REGISTRY"
    facts["registry_part"] = f"`{registry}` " if registry else ""
    image = groups.get("image") or base.get("image") or ""
    facts["image_part"] = f"`{image}` " if image else ""
    return facts


def pip_index(log: Sequence[str]) -> str:
    """The index pip says it used (``Looking in indexes: …``), else PyPI."""
    for line in log:
        m = re.search(r"Looking in indexes: (\S+)", line)
        if m:
            return f"the index `{m.group(1).rstrip(',')}`"
    return "PyPI (`https://pypi.org/simple`)"


def diagnose(
    stage: str,
    texts: Iterable[str],
    *,
    facts: dict[str, str] | None = None,
    causes: Sequence[Cause] = BUILTIN_CAUSES,
) -> Diagnosis | None:
    """The first cause of ``causes`` for ``stage`` found in ``texts`` (error text, log lines)."""
    lines = list(texts)
    text = "\n".join(lines)
    base = dict(facts or {})
    base.setdefault("index", pip_index(lines))
    for cause in causes:
        if stage not in cause.stages:
            continue
        groups = cause.match(text)
        if groups is None:
            continue
        values = _facts(groups, base)
        return Diagnosis(cause.name, cause.reason.format_map(values),
                         cause.hint.format_map(values))
    return None
