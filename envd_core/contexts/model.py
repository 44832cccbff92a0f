"""The context record and the set of contexts a store holds.

Plain classes with ``__slots__`` rather than attrs: this module is on the path of every
``envd context ls``, and building attrs classes at import (plus importing attrs) cost more than
the rest of that command. They behave as the attrs records did: keyword construction, ``==``,
``repr``; :class:`Context` is frozen and hashable.
"""

from __future__ import annotations

from envd_core.errors import ContextError, StoreError

TYPE_CHECKING = False  # typing is not imported at run time (start-up cost)
if TYPE_CHECKING:
    from typing import Any

DEFAULT_NAME = "default"


_CONTEXT_FIELDS = (
    "name", "builder", "builder_address", "runner", "runner_address", "builder_options",
    "runner_options", "description",
)


class Context:
    """One named pair of builder and runner, with their typed options.

    Addresses are stored without a scheme, as upstream envd does; ``builder_url`` adds it.
    Options are strings (see :mod:`envd_core.options`); file options hold absolute paths.
    Frozen: change a context by building a new one (:meth:`evolve`).
    """

    __slots__ = _CONTEXT_FIELDS

    name: str
    builder: str
    builder_address: str
    runner: str
    runner_address: str | None
    builder_options: dict[str, str]
    runner_options: dict[str, str]
    description: str

    def __init__(
        self,
        name: str,
        builder: str,
        builder_address: str,
        runner: str = "docker",
        runner_address: str | None = None,
        builder_options: dict[str, str] | None = None,
        runner_options: dict[str, str] | None = None,
        description: str = "",
    ) -> None:
        put = object.__setattr__
        put(self, "name", name)
        put(self, "builder", builder)
        put(self, "builder_address", builder_address)
        put(self, "runner", runner)
        put(self, "runner_address", runner_address)
        put(self, "builder_options", {} if builder_options is None else builder_options)
        put(self, "runner_options", {} if runner_options is None else runner_options)
        put(self, "description", description)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"Context is frozen: cannot set `{name}`")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"Context is frozen: cannot delete `{name}`")

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, f) for f in _CONTEXT_FIELDS)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(tuple(
            tuple(sorted(v.items())) if isinstance(v, dict) else v for v in self._values()
        ))

    def __repr__(self) -> str:
        fields = ", ".join(f"{f}={getattr(self, f)!r}" for f in _CONTEXT_FIELDS)
        return f"Context({fields})"

    def asdict(self) -> dict[str, Any]:
        """Every field by name (options copied), as ``attrs.asdict`` gave it."""
        return {
            f: dict(v) if isinstance(v, dict) else v
            for f, v in zip(_CONTEXT_FIELDS, self._values(), strict=True)
        }

    def evolve(self, **changes: Any) -> Context:
        """A copy with ``changes`` applied."""
        return Context(**{**self.asdict(), **changes})

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


def context_row(
    context: Context, current: str | None, origin: str | None = None
) -> dict[str, Any]:
    """Upstream's ``context ls --format json`` keys (runner_addr omitted when unset), then
    ``origin``: ``user``, or where a read-only team context was defined."""
    row: dict[str, Any] = {
        "context": context.name,
        "builder": context.builder,
        "builder_addr": context.builder_url,
        "runner": context.runner,
    }
    if context.runner_address:
        row["runner_addr"] = context.runner_address
    row["current"] = context.name == current
    row["origin"] = origin or "user"
    return row


def default_context() -> Context:
    """The context written on first run: dockerd's embedded BuildKit, as upstream's default."""
    return Context(
        name=DEFAULT_NAME, builder="moby-worker", builder_address="envd_buildkitd", runner="docker"
    )


class ContextSet:
    """Every context of a store, in creation order, and the name of the current one.

    ``origins`` is empty in what a store holds; the view :func:`envd_core.contexts.team.layer`
    builds over it names, for each read-only team context, where it was defined.
    """

    __slots__ = ("contexts", "current", "origins")

    def __init__(
        self,
        contexts: dict[str, Context] | None = None,
        current: str | None = None,
        origins: dict[str, str] | None = None,
    ) -> None:
        self.contexts: dict[str, Context] = {} if contexts is None else contexts
        self.current = current
        self.origins: dict[str, str] = {} if origins is None else origins

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ContextSet):
            return NotImplemented
        return (self.contexts, self.current, self.origins) == (
            other.contexts, other.current, other.origins
        )

    __hash__ = None  # type: ignore[assignment]  # mutable, as the attrs record was

    def __repr__(self) -> str:
        return (f"ContextSet(contexts={self.contexts!r}, current={self.current!r}, "
                f"origins={self.origins!r})")

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
