"""The hooks a vendor distribution uses, merged and checked: a mixin of :class:`Plugins`.

Kept apart from :mod:`envd_core.plugins` (loading and type hooks) so each module stays small.
Every method calls its hook's implementations one plugin at a time, so an error names the
plugin that caused it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import attrs

from envd_core.contexts.model import Context, ContextSet
from envd_core.errors import PluginError

if TYPE_CHECKING:
    import pluggy

    from envd_core.contexts.team import TeamContext


@attrs.frozen
class Distribution:
    """The envd distribution installed: its name and version, and who declared it."""

    name: str
    version: str | None
    plugin: str
    package: str | None

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    def __str__(self) -> str:
        return f"{self.name} {self.version}" if self.version else self.name


class VendorHooks:
    """Default contexts, team contexts, extra commands, option defaults, the distribution."""

    pm: pluggy.PluginManager
    _infos: dict[str, Any]

    def _call(self, impl: pluggy.HookImpl, hook: str) -> object:  # provided by Plugins
        raise NotImplementedError

    def _impls(self, hook: str) -> list[pluggy.HookImpl]:
        """Implementations in registration order: the core first, distributions after it."""
        return list(getattr(self.pm.hook, hook).get_hookimpls())

    def _contexts_from(self, hook: str) -> list[tuple[str, Context]]:
        found: list[tuple[str, Context]] = []
        owner: dict[str, str] = {}
        for impl in self._impls(hook):
            returned = self._call(impl, hook)
            if returned is None:
                continue
            if not isinstance(returned, (list, tuple)) or not all(
                isinstance(c, Context) for c in returned
            ):
                raise PluginError(
                    f"plugin `{impl.plugin_name}`: {hook} must return a list of "
                    "envd_core.contexts.model.Context"
                )
            for ctx in returned:
                if ctx.name in owner:
                    raise PluginError(
                        f"context `{ctx.name}` is provided by both `{owner[ctx.name]}` and "
                        f"`{impl.plugin_name}` ({hook})"
                    )
                owner[ctx.name] = impl.plugin_name
                found.append((impl.plugin_name, ctx))
        return found

    # -- contexts ---------------------------------------------------------------------------
    def team_contexts(self) -> list[TeamContext]:
        """The read-only contexts plugins provide (``envd_team_contexts``), with their origin."""
        from envd_core.contexts.team import TeamContext

        return [
            TeamContext(ctx, f"plugin {plugin}")
            for plugin, ctx in self._contexts_from("envd_team_contexts")
        ]

    def initial_contexts(self, team_names: set[str] | None = None) -> ContextSet:
        """What a fresh store holds: every plugin's default contexts, and the current one."""
        contexts = ContextSet()
        for _, ctx in self._contexts_from("envd_default_contexts"):
            contexts.contexts[ctx.name] = ctx
        current: object = None
        chooser = None
        for impl in reversed(self._impls("envd_default_current")):  # distributions first
            current = self._call(impl, "envd_default_current")
            if current is not None:
                chooser = impl.plugin_name
                break
        if current is None:
            current = next(iter(contexts.contexts), None)
        elif not isinstance(current, str) or (
            current not in contexts.contexts and current not in (team_names or set())
        ):
            raise PluginError(
                f"plugin `{chooser}`: envd_default_current returned `{current}`, which is "
                "neither a default context nor a team context",
                hint=f"disable it with `envd plugins disable {chooser}`",
            )
        contexts.current = current
        return contexts

    # -- commands ----------------------------------------------------------------------------
    def commands(self, builtin: Mapping[str, str]) -> dict[str, str]:
        """Extra commands by name (``"module:attribute"``); a clash with anything is an error."""
        found: dict[str, str] = {}
        owner: dict[str, str] = {}
        for impl in self._impls("envd_commands"):
            returned = self._call(impl, "envd_commands") or {}
            if not isinstance(returned, Mapping):
                raise PluginError(
                    f"plugin `{impl.plugin_name}`: envd_commands must return a mapping"
                )
            for name, target in returned.items():
                if not (isinstance(name, str) and name and isinstance(target, str)
                        and ":" in target):
                    raise PluginError(
                        f"plugin `{impl.plugin_name}`: command `{name}` must map a name to "
                        "\"module:attribute\""
                    )
                if name in builtin:
                    raise PluginError(
                        f"plugin `{impl.plugin_name}` adds command `{name}`, which is built in"
                    )
                if name in found:
                    raise PluginError(
                        f"command `{name}` is provided by both `{owner[name]}` and "
                        f"`{impl.plugin_name}`"
                    )
                found[name], owner[name] = target, impl.plugin_name
        return found

    # -- option defaults ---------------------------------------------------------------------
    def option_defaults(self, kind: str, type_name: str, declared: Any) -> dict[str, str]:
        """Defaults for the options of ``kind`` (builder/runner) type ``type_name``, parsed."""
        from envd_core.errors import EnvdError
        from envd_core.options import parse_options

        key = f"{kind}.{type_name}"
        merged: dict[str, str] = {}
        owner: dict[str, str] = {}
        for impl in self._impls("envd_option_defaults"):
            returned = self._call(impl, "envd_option_defaults") or {}
            if not isinstance(returned, Mapping):
                raise PluginError(
                    f"plugin `{impl.plugin_name}`: envd_option_defaults must return a mapping"
                )
            values = returned.get(key)
            if not values:
                continue
            if not isinstance(values, Mapping):
                raise PluginError(f"plugin `{impl.plugin_name}`: defaults for `{key}` must be "
                                  "a mapping of option to value")
            try:
                parsed = parse_options(declared, dict(values), owner=f"{kind} `{type_name}`")
            except EnvdError as exc:
                raise PluginError(
                    f"plugin `{impl.plugin_name}`: bad default option for {kind} "
                    f"`{type_name}`: {exc.message}",
                    hint=f"disable it with `envd plugins disable {impl.plugin_name}`",
                ) from None
            for option, value in parsed.items():
                if option in merged:
                    raise PluginError(
                        f"default of {kind} option `{type_name}.{option}` is given by both "
                        f"`{owner[option]}` and `{impl.plugin_name}`"
                    )
                merged[option], owner[option] = value, impl.plugin_name
        return merged

    def build_file_limits(self) -> dict[str, str]:
        """The ``"build-file"`` entry of ``envd_option_defaults``: a distribution's defaults for
        the build-file evaluation limits (``depth``, ``memory``, ``steps``, ``time``), checked
        by :func:`envd_core.envdfile.lang.limits.limits_in_force`."""
        merged: dict[str, str] = {}
        owner: dict[str, str] = {}
        for impl in self._impls("envd_option_defaults"):
            returned = self._call(impl, "envd_option_defaults") or {}
            values = returned.get("build-file") if isinstance(returned, Mapping) else None
            if not values:
                continue
            if not isinstance(values, Mapping):
                raise PluginError(f"plugin `{impl.plugin_name}`: defaults for `build-file` must "
                                  "be a mapping of limit to value")
            for key, value in values.items():
                if key in merged:
                    raise PluginError(f"build-file limit `{key}` is given by both "
                                      f"`{owner[key]}` and `{impl.plugin_name}`")
                merged[str(key)], owner[str(key)] = str(value), impl.plugin_name
        return merged

    # -- the distribution --------------------------------------------------------------------
    def distribution(self) -> Distribution | None:
        """The distribution a plugin declares (``envd_distribution``), or ``None`` for stock."""
        found: Distribution | None = None
        for impl in self._impls("envd_distribution"):
            returned = self._call(impl, "envd_distribution")
            if returned is None:
                continue
            name = returned.get("name") if isinstance(returned, Mapping) else None
            version = returned.get("version") if isinstance(returned, Mapping) else None
            if not (isinstance(name, str) and name.strip()) or not (
                version is None or isinstance(version, str)
            ):
                raise PluginError(
                    f"plugin `{impl.plugin_name}`: envd_distribution must return "
                    "{\"name\": str, \"version\": str}"
                )
            if found is not None:
                raise PluginError(
                    f"two distributions are installed: `{found.name}` (plugin `{found.plugin}`) "
                    f"and `{name}` (plugin `{impl.plugin_name}`)",
                    hint=f"disable one with `envd plugins disable {impl.plugin_name}`",
                )
            info = self._infos.get(impl.plugin_name)
            package = getattr(info, "distribution", None)
            found = Distribution(
                name.strip(), version or getattr(info, "version", None), impl.plugin_name, package
            )
        return found
