"""Finding, loading and validating plugins.

Plugins come from the entry-point group ``envd``; the core registers its own embedded pieces (the
file store) the same way, as the plugin ``core``. Nothing here imports a plugin by name.

Environment switches (each tested):

``ENVD_PLUGINS=a,b``
    load only these entry-point plugins (``ENVD_PLUGINS=`` with an empty value loads none).
``ENVD_DISABLE_PLUGINS=a,b``
    never load these.
``ENVD_TRACE_HOOKS=1``
    print every hook call and what each plugin returned to stderr.

Beside them, ``envd plugins disable NAME`` stores NAME in ``plugins.json`` (see
:mod:`envd_core.plugin_config`); a disabled plugin is listed but never imported.

A plugin that fails to import, or defines a hook envd does not know (a typo), is left out with a
one-line warning; commands that do not need it keep working.
"""

from __future__ import annotations

import inspect
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs
import pluggy

from envd_core import hookspecs
from envd_core._entrypoints import entry_points
from envd_core.builder import Builder
from envd_core.contexts.store import ContextStore
from envd_core.errors import ContextError, PluginError
from envd_core.plugin_index import split_env as _split_env
from envd_core.runner import Runner
from envd_core.vendor import Distribution, VendorHooks

if TYPE_CHECKING:
    from envd_core.pipeline.causes import Cause

GROUP = "envd"

#: Which distribution provides the types of the in-repo plugins: used to tell users what to
#: install when a stored context names a type no installed plugin provides.
KNOWN_PROVIDERS: Mapping[str, str] = {
    "moby-worker": "envd-moby",
    "tcp": "envd-tcp",
    "unix": "envd-tcp",
    "docker-container": "envd-docker-container",
    "rootless": "envd-rootless",
    "kube-pod": "envd-kube-pod",
    "docker": "envd-docker-runner",
    "envd-server": "envd-server-runner",
}

#: The Python packages of plugins kept in envd's own repository (``plugins/``, the examples):
#: ``envd plugins ls`` shows them as ``in-repo``, other packages as ``third-party``.
IN_REPO = frozenset({
    "envd-tcp", "envd-moby", "envd-docker-client", "envd-docker-runner", "envd-example-plugin",
    *KNOWN_PROVIDERS.values(),
})

_KINDS: dict[str, tuple[str, type, str]] = {
    # attribute: (hook, base class, noun)
    "builders": ("envd_builder_types", Builder, "builder"),
    "runners": ("envd_runner_types", Runner, "runner"),
    "stores": ("envd_context_stores", ContextStore, "context store"),
}


@attrs.define
class PluginInfo:
    """One plugin as ``envd plugins ls`` shows it."""

    name: str
    distribution: str | None = None
    version: str | None = None
    builders: list[str] = attrs.field(factory=list)
    runners: list[str] = attrs.field(factory=list)
    stores: list[str] = attrs.field(factory=list)
    error: str | None = None
    #: ``enabled``, or why not: ``disabled`` (``envd plugins disable``),
    #: ``disabled by ENVD_DISABLE_PLUGINS``, ``not in ENVD_PLUGINS``.
    state: str = "enabled"
    #: ``built-in``, ``in-repo``, ``third-party`` or ``distribution`` (set by ``infos()``).
    origin: str = "third-party"

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)


class Plugins(VendorHooks):
    """The loaded plugins and the types they provide, validated on first use."""

    def __init__(self, pm: pluggy.PluginManager, infos: dict[str, PluginInfo]) -> None:
        self.pm = pm
        self._infos = infos
        self._types: dict[str, dict[str, type]] = {}
        self._owner: dict[tuple[str, str], str] = {}
        self.trace = bool(os.environ.get("ENVD_TRACE_HOOKS"))

    # -- loading ---------------------------------------------------------------------------
    @classmethod
    def create(
        cls, *, entry_points: bool = True, extra: Iterable[tuple[str, object]] = ()
    ) -> Plugins:
        """A fresh manager with the core plugin, entry-point plugins and ``extra`` ones.

        In a resident child, the first call takes the manager its server registered before
        forking (:meth:`keep_ready`) when it is the same as a fresh one would be: every
        entry-point plugin enabled, no ``extra``, no hook tracing.
        """
        if entry_points and not extra and _READY:
            ready = _READY.pop()
            if _every_plugin_enabled():
                return ready
        return cls._fresh(entry_points=entry_points, extra=extra)

    @classmethod
    def keep_ready(cls) -> None:
        """Register every entry-point plugin now, for the next :meth:`create` to take.

        Called once by the resident server after its imports (envd_core/resident/preload.py),
        so each forked child skips the registration: pluggy inspects every attribute of every
        plugin, ~15 ms of each command. Made with every plugin enabled, whatever the server's
        own switches were; a child whose switches disable one makes a fresh manager instead.
        """
        ready = cls._fresh(entry_points=True, extra=(), switches=False)
        ready.trace = False
        _READY[:] = [ready]

    @classmethod
    def _fresh(cls, *, entry_points: bool, extra: Iterable[tuple[str, object]],
               switches: bool = True) -> Plugins:
        pm = pluggy.PluginManager(hookspecs.PROJECT)
        pm.add_hookspecs(hookspecs)
        infos: dict[str, PluginInfo] = {}
        plugins = cls(pm, infos)
        from envd_core import __version__, _builtin

        plugins.register(_builtin, name="core", distribution="envd-core", version=__version__)
        if entry_points:
            plugins._load_entry_points(switches=switches)
        for name, obj in extra:
            plugins.register(obj, name=name)
        if plugins.trace and switches:
            pm.trace.root.setwriter(lambda line: sys.stderr.write(f"envd: trace: {line}"))
            pm.enable_tracing()
        return plugins

    def _load_entry_points(self, *, switches: bool = True) -> None:
        from envd_core.plugin_config import disabled_plugins
        from envd_core.plugin_index import plugin_state

        only = _split_env(os.environ.get("ENVD_PLUGINS")) if switches else None
        blocked = (_split_env(os.environ.get("ENVD_DISABLE_PLUGINS")) or set()) if switches \
            else set()
        disabled = disabled_plugins() if switches else set()
        for ep in entry_points(GROUP):
            dist_name, version = ep.distribution, ep.version
            state = plugin_state(ep.name, only, blocked, disabled)
            if state is not None:  # listed by `plugins ls`, never imported
                self._infos[ep.name] = PluginInfo(ep.name, dist_name, version, state=state)
                continue
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import-time failure of third-party code
                self._infos[ep.name] = PluginInfo(
                    ep.name, dist_name, version, error=f"{type(exc).__name__}: {exc}"
                )
                continue
            self.register(module, name=ep.name, distribution=dist_name, version=version)

    def register(
        self,
        plugin: object,
        *,
        name: str,
        distribution: str | None = None,
        version: str | None = None,
    ) -> None:
        """Register ``plugin`` under ``name``; an unknown hook disables it with a warning."""
        if self.pm.has_plugin(name):
            raise PluginError(f"two plugins are named `{name}`")
        info = PluginInfo(name, distribution, version)
        self._infos[name] = info
        try:
            self.pm.register(plugin, name=name)
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            if self.pm.has_plugin(name):
                self.pm.unregister(name=name)
            info.error = _unknown_hook_message(plugin, exc)
        self._types.clear()

    def unregister(self, name: str) -> None:
        """Remove a plugin (tests use this to clean up throwaway plugins)."""
        if self.pm.has_plugin(name):
            self.pm.unregister(name=name)
        self._infos.pop(name, None)
        self._types.clear()

    # -- what plugins provide --------------------------------------------------------------
    # The type-valued lookups below return dict[str, type] entries narrowed to the kind's base
    # class: _validate_type checked each class with issubclass when it was collected.
    @property
    def failures(self) -> list[PluginInfo]:
        return [info for info in self._infos.values() if info.error]

    def warnings(self) -> list[str]:
        """One line per plugin that could not be used."""
        lines = []
        for info in self.failures:
            dist = f" ({info.distribution} {info.version})" if info.distribution else ""
            lines.append(
                f"plugin `{info.name}`{dist} failed to load: {info.error}; commands that need it "
                f"will not work (ENVD_DISABLE_PLUGINS={info.name} silences this)"
            )
        return lines

    def infos(self) -> list[PluginInfo]:
        """Every plugin, loaded or not, with what it provides, its state and its origin."""
        for kind in _KINDS:
            self._collect(kind)
        dist = self.distribution()
        for info in self._infos.values():
            if info.name == "core":
                info.origin = "built-in"
            elif dist is not None and (
                info.name == dist.plugin
                or (info.distribution is not None and info.distribution == dist.package)
            ):
                info.origin = "distribution"
            elif info.distribution in IN_REPO:
                info.origin = "in-repo"
        return sorted(self._infos.values(), key=lambda info: (info.name != "core", info.name))

    def known(self, name: str) -> PluginInfo | None:
        """The plugin called ``name``, whether loaded, disabled or broken."""
        return self._infos.get(name)

    @property
    def builder_types(self) -> dict[str, type[Builder]]:
        return self._collect("builders")

    @property
    def runner_types(self) -> dict[str, type[Runner]]:
        return self._collect("runners")

    @property
    def store_types(self) -> dict[str, type[ContextStore]]:
        return self._collect("stores")

    def builder_type(self, name: str) -> type[Builder]:
        """The builder class called ``name``, or a ContextError saying what to install."""
        return self._lookup("builders", name)

    def runner_type(self, name: str) -> type[Runner]:
        return self._lookup("runners", name)

    def provider_of(self, kind: str, name: str) -> str | None:
        """The plugin that registered type ``name`` of ``kind`` (builders/runners/stores)."""
        self._collect(kind)
        return self._owner.get((kind, name))

    def loaded(self, name: str) -> bool:
        """Whether plugin ``name`` is registered (loaded and valid)."""
        return self.pm.has_plugin(name)

    def build_functions(self) -> dict[str, Callable[..., Any]]:
        """Extra build.envd functions from every plugin; a name given twice is an error."""
        merged: dict[str, Callable[..., Any]] = {}
        owner: dict[str, str] = {}
        for impl in self.pm.hook.envd_build_functions.get_hookimpls():
            returned = self._call(impl, "envd_build_functions") or {}
            if not isinstance(returned, Mapping):
                raise PluginError(
                    f"plugin `{impl.plugin_name}`: envd_build_functions must return a mapping, "
                    f"got {type(returned).__name__}"
                )
            for key, func in returned.items():
                if not isinstance(key, str) or not key or not callable(func):
                    raise PluginError(
                        f"plugin `{impl.plugin_name}`: build function `{key}` must be a "
                        "non-empty name mapped to a callable"
                    )
                if key in merged:
                    raise PluginError(
                        f"build function `{key}` is provided by both `{owner[key]}` and "
                        f"`{impl.plugin_name}`"
                    )
                merged[key], owner[key] = func, impl.plugin_name
        return merged

    def failure_causes(self) -> tuple[Cause, ...]:
        """Every plugin's failure causes (``envd_build_failure_causes``), then the built-in ones."""
        from envd_core.pipeline.causes import BUILTIN_CAUSES, Cause

        rows: list[Cause] = []
        for impl in self.pm.hook.envd_build_failure_causes.get_hookimpls():
            returned = self._call(impl, "envd_build_failure_causes") or ()
            if isinstance(returned, (str, bytes)) or not isinstance(returned, Sequence):
                raise PluginError(
                    f"plugin `{impl.plugin_name}`: envd_build_failure_causes must return a "
                    f"sequence of Cause, got {type(returned).__name__}"
                )
            for row in returned:
                if not isinstance(row, Cause):
                    raise PluginError(
                        f"plugin `{impl.plugin_name}`: envd_build_failure_causes returned "
                        f"`{row!r}`, not a Cause"
                    )
                rows.append(row)
        return (*rows, *BUILTIN_CAUSES)

    # -- internals -------------------------------------------------------------------------
    def _lookup(self, kind: str, name: str) -> type:
        types = self._collect(kind)
        if name in types:
            return types[name]
        noun = _KINDS[kind][2]
        installed = ", ".join(sorted(types)) or "none"
        provider = KNOWN_PROVIDERS.get(name)
        hint = (
            f"{noun} type `{name}` is provided by the package `{provider}`; install it"
            if provider
            else f"install the plugin that provides {noun} type `{name}`"
        )
        raise ContextError(f"unknown {noun} type `{name}` (installed: {installed})", hint=hint)

    def _call(self, impl: pluggy.HookImpl, hook: str) -> object:
        try:
            returned: object = impl.function()
        except Exception as exc:  # a plugin's bug becomes one PluginError
            raise PluginError(
                f"plugin `{impl.plugin_name}` failed in {hook}: {type(exc).__name__}: {exc}",
                hint=f"disable it with ENVD_DISABLE_PLUGINS={impl.plugin_name}",
            ) from exc
        if self.trace:
            sys.stderr.write(f"envd: trace: {hook} [{impl.plugin_name}] -> {returned!r}\n")
        return returned

    def _collect(self, kind: str) -> dict[str, type]:
        if kind in self._types:
            return self._types[kind]
        hook, base, noun = _KINDS[kind]
        found: dict[str, type] = {}
        for impl in reversed(getattr(self.pm.hook, hook).get_hookimpls()):
            plugin = impl.plugin_name
            returned = self._call(impl, hook)
            if returned is None:
                continue
            if not isinstance(returned, (list, tuple)):
                raise PluginError(
                    f"plugin `{plugin}`: {hook} must return a list of classes, "
                    f"got {type(returned).__name__}"
                )
            for cls in returned:
                name = _validate_type(cls, base, noun, plugin)
                if name in found:
                    raise PluginError(
                        f"{noun} type `{name}` is provided by both "
                        f"`{self._owner[(kind, name)]}` and `{plugin}`",
                        hint=f"disable one of them with ENVD_DISABLE_PLUGINS={plugin}",
                    )
                found[name] = cls
                self._owner[(kind, name)] = plugin
                info = self._infos.get(plugin)
                if info is not None and name not in getattr(info, kind):
                    getattr(info, kind).append(name)
        self._types[kind] = found
        return found


def distribution(plugins: Plugins | None = None) -> Distribution | None:
    """The envd distribution installed (``envd_distribution``), or ``None`` for stock envd.

    For ``envd version`` and ``envd plugins ls``: ``str()`` of the result is ``"Acme envd
    2026.11"``. Loads the plugins (entry points included) when ``plugins`` is not given.
    """
    return (plugins or Plugins.create()).distribution()


def _validate_type(cls: object, base: type, noun: str, plugin: str) -> str:
    if not (isinstance(cls, type) and issubclass(cls, base)):
        raise PluginError(
            f"plugin `{plugin}` returned {cls!r} as a {noun} type; "
            f"expected a subclass of {base.__module__}.{base.__qualname__}"
        )
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.strip():
        raise PluginError(f"plugin `{plugin}`: {noun} type {cls.__qualname__} has no `name`")
    if inspect.isabstract(cls):
        missing = ", ".join(sorted(getattr(cls, "__abstractmethods__", ())))
        raise PluginError(
            f"plugin `{plugin}`: {noun} type `{name}` does not implement required method(s) "
            f"{missing}"
        )
    return name


def _unknown_hook_message(plugin: object, exc: Exception) -> str:
    known = {n for n in dir(hookspecs) if n.startswith("envd_")}
    unknown = sorted(
        n
        for n in dir(plugin)
        if n.startswith("envd_") and n not in known and callable(getattr(plugin, n))
    )
    if unknown:
        return f"defines unknown hook(s) {', '.join(unknown)} (misspelled?)"
    return str(exc)


#: The manager a resident server registered before forking (:meth:`Plugins.keep_ready`); the
#: first :meth:`Plugins.create` of a child takes it. Empty everywhere else.
_READY: list[Plugins] = []


def _every_plugin_enabled() -> bool:
    """Whether no switch disables a plugin and hooks are not traced: then a manager with every
    entry-point plugin registered is the one :meth:`Plugins.create` would make."""
    from envd_core.plugin_config import disabled_plugins

    return (os.environ.get("ENVD_PLUGINS") is None and not os.environ.get("ENVD_DISABLE_PLUGINS")
            and not os.environ.get("ENVD_TRACE_HOOKS") and not disabled_plugins())
