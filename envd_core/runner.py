"""The base class every runner type subclasses.

A *runner type* (``docker``, ``envd-server``) runs the environments a builder produced. Runner
types live in plugins and are registered through the ``envd_runner_types`` hook.

Example::

    from envd_core.runner import Runner
    from envd_core import hookimpl

    class NomadRunner(Runner):
        name = "nomad"
        summary = "run environments as Nomad jobs"
        address_help = "http(s)://host:port"

    @hookimpl
    def envd_runner_types():
        return [NomadRunner]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import IO, ClassVar

from envd_core.builder import strip_scheme
from envd_core.errors import RunnerError, ValidationError
from envd_core.options import Option


class Runner:
    """Base class of runner types. Every method has a safe default; override what you support."""

    #: **Required.** The type name users pass to ``--runner`` (``docker``, ``envd-server``).
    name: ClassVar[str]
    #: One line for ``envd plugins ls`` and error messages.
    summary: ClassVar[str] = ""
    #: What an address looks like, for help and error messages.
    address_help: ClassVar[str] = "address"
    #: Options accepted with ``--runner-opt key=value``.
    options: ClassVar[tuple[Option, ...]] = ()
    #: Whether :meth:`load_image` can receive a docker-format image tarball.
    can_load_images: ClassVar[bool] = False

    def __init__(self, address: str | None, options: Mapping[str, str] | None = None) -> None:
        self.address = address
        self.options = dict(options or {})

    @classmethod
    def normalize_address(cls, address: str) -> str | None:
        """Return the address to store, ``None`` when empty (the runner's default applies)."""
        value = address.strip()
        if not value:
            return None
        if any(ch.isspace() for ch in value):
            raise ValidationError(f"runner address must not contain whitespace: `{address}`")
        return strip_scheme(value, cls.name) or None

    @classmethod
    def options_declared(cls) -> tuple[Option, ...]:
        return tuple(cls.options)

    def load_image(self, tarball: IO[bytes]) -> list[str]:
        """Load a docker-format image tarball (read in chunks); return the loaded image names."""
        raise RunnerError(f"runner `{self.name}` cannot load images")

    def push_image(self, name: str) -> None:
        """Push image ``name`` from the runner's image store to its registry."""
        raise RunnerError(f"runner `{self.name}` cannot push images")
