"""Acme's envd distribution: one plugin module using every vendor hook.

Installed with ``pip install acme-envd``, it gives every Acme developer the same envd:

* the distribution's name in ``envd plugins ls`` and ``envd version``;
* Acme's shared BuildKit as a read-only team context, current on first use;
* a laptop context seeded into each user's own store (theirs to change);
* the CA bundle of Acme's TLS-intercepting proxy for every ``tcp`` builder;
* ``acme_base()`` in ``build.envd`` and the command group ``envd acme``.

This module is imported on every ``envd`` command: it imports nothing heavy (the command group
lives in :mod:`acme_envd.cli`, imported only when ``envd acme`` runs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from envd_core import hookimpl
from envd_core.contexts.model import Context

#: Where Acme's base images live; ACME_REGISTRY overrides it (a local mirror, tests).
REGISTRY = "registry.acme.internal"
#: Debian's bundle, to which Acme's provisioning adds the proxy's CA (update-ca-certificates).
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

SHARED = Context(
    name="acme-shared",
    builder="tcp",
    builder_address="buildkit.acme.internal:1234",
    description="Acme's shared BuildKit (team context from acme-envd)",
)


def registry() -> str:
    return os.environ.get("ACME_REGISTRY") or REGISTRY


@hookimpl
def envd_distribution() -> Mapping[str, str]:
    # no "version": envd takes the package's own (2026.11.0), so it can never go stale
    return {"name": "Acme envd"}


@hookimpl
def envd_team_contexts() -> list[Context]:
    return [SHARED]


@hookimpl
def envd_default_contexts() -> list[Context]:
    return [Context(name="acme-laptop", builder="moby-worker", builder_address="envd_buildkitd",
                    description="dockerd's BuildKit on this machine")]


@hookimpl
def envd_default_current() -> str:
    return SHARED.name


@hookimpl
def envd_option_defaults() -> Mapping[str, Mapping[str, str]]:
    if not os.path.exists(CA_BUNDLE):  # a machine Acme did not provision: no default
        return {}
    return {"builder.tcp": {"ca-bundle": CA_BUNDLE}}


@hookimpl
def envd_commands() -> Mapping[str, str]:
    return {"acme": "acme_envd.cli:acme"}


def acme_base(graph: Any, flavour: str = "python", version: str = "3.11") -> None:
    """``acme_base(flavour="python")``: Acme's approved base image and its certificates."""
    if flavour not in ("python", "debian"):
        raise ValueError(f"acme_base: unknown flavour `{flavour}` (python, debian)")
    tag = f"{flavour}:{version}-bookworm" if flavour == "python" else "debian:bookworm"
    graph.image = f"{registry()}/{tag}"
    graph.image_set = True
    graph.apt_packages.append("ca-certificates")


@hookimpl
def envd_build_functions() -> Mapping[str, Any]:
    return {"acme_base": acme_base}
