"""Exporter descriptions for ``BuildkitClient.solve`` (type + attributes).

The helpers build the attribute maps BuildKit expects; bool attributes are sent as
``"true"``/``"false"``. ``tar``/``oci``/``docker``/``local`` send their output to the client and
therefore need a session with an export target (``envd_core.buildkit.session``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from envd_core.errors import ValidationError

# Exporters a dockerd 20.10 (graphdriver, BuildKit v0.8) daemon offers.
DOCKERD_EXPORTERS = ("moby", "local", "tar")


@dataclass(frozen=True)
class Exporter:
    """One exporter: BuildKit ``type`` and its ``attrs``."""

    type: str
    attrs: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.type:
            raise ValidationError("an exporter needs a type, e.g. `image`, `moby`, `tar`")

    # -- constructors
    @classmethod
    def image(
        cls,
        name: str | None = None,
        *,
        push: bool = False,
        insecure: bool = False,
        unpack: bool | None = None,
        config: str | None = None,
        **extra: str,
    ) -> Exporter:
        """The ``image`` exporter (buildkitd). ``config``: OCI image config JSON to set."""
        attrs: dict[str, str] = {}
        if name:
            attrs["name"] = name
        if push:
            attrs["push"] = "true"
        if insecure:
            attrs["registry.insecure"] = "true"
        if unpack is not None:
            attrs["unpack"] = _b(unpack)
        if config is not None:
            attrs["containerimage.config"] = config
        attrs.update(extra)
        return cls("image", attrs)

    @classmethod
    def moby(cls, name: str | None = None, **extra: str) -> Exporter:
        """dockerd's exporter: the image goes into dockerd's store (tags comma-separated)."""
        attrs = {"name": name} if name else {}
        attrs.update(extra)
        return cls("moby", attrs)

    @classmethod
    def oci(cls, name: str | None = None, **extra: str) -> Exporter:
        return cls("oci", ({"name": name} if name else {}) | dict(extra))

    @classmethod
    def docker(cls, name: str | None = None, **extra: str) -> Exporter:
        return cls("docker", ({"name": name} if name else {}) | dict(extra))

    @classmethod
    def tar(cls, **extra: str) -> Exporter:
        return cls("tar", dict(extra))

    @classmethod
    def local(cls, **extra: str) -> Exporter:
        return cls("local", dict(extra))

    @property
    def needs_session(self) -> bool:
        """True when the output streams back to the client (needs a session export target)."""
        return self.type in ("local", "tar") or (
            self.type in ("oci", "docker") and self.attrs.get("tar", "true") != "false"
        )


def _b(v: bool) -> str:
    return "true" if v else "false"
