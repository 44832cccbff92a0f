"""The context record (attrs) and the set of contexts a store holds."""

from __future__ import annotations

from typing import Any

import attrs

from envd_core.errors import ContextError, StoreError

DEFAULT_NAME = "default"


@attrs.frozen
class Context:
    """One named pair of builder and runner, with their typed options.

    Addresses are stored without a scheme, as upstream envd does; ``builder_url`` adds it.
    Options are strings (see :mod:`envd_core.options`); file options hold absolute paths.
    """

    name: str
    builder: str
    builder_address: str
    runner: str = "docker"
    runner_address: str | None = None
    builder_options: dict[str, str] = attrs.field(factory=dict)
    runner_options: dict[str, str] = attrs.field(factory=dict)
    description: str = ""

    @property
    def builder_url(self) -> str:
        return f"{self.builder}://{self.builder_address}"

    def to_json(self) -> dict[str, Any]:
        """The stored form: readable, stable key order, empty parts omitted."""
        builder: dict[str, Any] = {"type": self.builder, "address": self.builder_address}
        if self.builder_options:
            builder["options"] = dict(sorted(self.builder_options.items()))
        runner: dict[str, Any] = {"type": self.runner}
        if self.runner_address is not None:
            runner["address"] = self.runner_address
        if self.runner_options:
            runner["options"] = dict(sorted(self.runner_options.items()))
        data: dict[str, Any] = {"name": self.name, "builder": builder, "runner": runner}
        if self.description:
            data["description"] = self.description
        return data

    @classmethod
    def from_json(cls, data: Any, *, where: str) -> Context:
        """Read the stored form; a malformed entry raises StoreError naming ``where``."""
        try:
            builder = data["builder"]
            runner = data.get("runner") or {"type": "docker"}
            return cls(
                name=_str(data["name"]),
                builder=_str(builder["type"]),
                builder_address=_str(builder.get("address", "")),
                runner=_str(runner["type"]),
                runner_address=(
                    None if runner.get("address") is None else _str(runner["address"])
                ),
                builder_options=_str_map(builder.get("options", {})),
                runner_options=_str_map(runner.get("options", {})),
                description=_str(data.get("description", "")),
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise StoreError(
                f"{where}: malformed context entry ({exc.__class__.__name__}: {exc})"
            ) from None


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a mapping, got {type(value).__name__}")
    return {_str(k): _str(v) for k, v in value.items()}


def default_context() -> Context:
    """The context written on first run: dockerd's embedded BuildKit, as upstream's default."""
    return Context(
        name=DEFAULT_NAME, builder="moby-worker", builder_address="envd_buildkitd", runner="docker"
    )


@attrs.define
class ContextSet:
    """Every context of a store, in creation order, and the name of the current one.

    ``origins`` is empty in what a store holds; the view :func:`envd_core.contexts.team.layer`
    builds over it names, for each read-only team context, where it was defined.
    """

    contexts: dict[str, Context] = attrs.field(factory=dict)
    current: str | None = None
    origins: dict[str, str] = attrs.field(factory=dict)

    def origin(self, name: str) -> str | None:
        """Where the read-only context ``name`` was defined; ``None`` for the user's own."""
        return self.origins.get(name)

    def get(self, name: str) -> Context:
        try:
            return self.contexts[name]
        except KeyError:
            raise ContextError(f'context "{name}" does not exist', hint=self._known()) from None

    def add(self, context: Context) -> None:
        if context.name in self.contexts:
            raise ContextError(f'context "{context.name}" already exists')
        self.contexts[context.name] = context

    def replace(self, context: Context) -> None:
        self.get(context.name)
        self.contexts[context.name] = context

    def remove(self, name: str) -> Context:
        if name not in self.contexts:
            raise ContextError(f'cannot find context "{name}"', hint=self._known())
        if name == self.current:
            raise ContextError(
                f'cannot remove current context "{name}"',
                hint="switch first with `envd context use --name <other>`",
            )
        return self.contexts.pop(name)

    def use(self, name: str) -> None:
        self.get(name)
        self.current = name

    def _known(self) -> str:
        names = ", ".join(self.contexts) or "none"
        return f"known contexts: {names}"
