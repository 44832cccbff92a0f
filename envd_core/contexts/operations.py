"""Operations on contexts: what ``envd context …`` does, independent of how it is shown."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from envd_core.builder import Builder
from envd_core.contexts.model import Context, ContextSet
from envd_core.contexts.resolve import Resolved, resolve
from envd_core.contexts.store import ContextStore
from envd_core.contexts.validate import validate_name
from envd_core.errors import ContextError, EnvdError, ValidationError
from envd_core.options import parse_options
from envd_core.plugins import KNOWN_PROVIDERS, Plugins
from envd_core.runner import Runner

if TYPE_CHECKING:
    from envd_core.contexts.team import TeamContext
    from envd_core.contexts.upstream import ImportPlan
    from envd_core.contexts.upstream_auth import UpstreamAuth

EXPORT_FORMAT = "envd-context/v1"


def open_store(plugins: Plugins, name: str | None = None) -> ContextStore:
    """The store selected by ``ENVD_CONTEXT_STORE`` (default ``file``)."""
    wanted = name or os.environ.get("ENVD_CONTEXT_STORE") or "file"
    stores = plugins.store_types
    if wanted not in stores:
        known = ", ".join(sorted(stores)) or "none"
        raise ContextError(f"unknown context store `{wanted}` (installed: {known})")
    store = stores[wanted]()
    # a fresh store starts with what the plugins' envd_default_contexts give (the core's
    # `default` among them); asked only when the store is first written
    store.seed = lambda: plugins.initial_contexts(set(team_contexts(plugins)))
    return store


def team_contexts(plugins: Plugins) -> dict[str, TeamContext]:
    """Read-only team contexts by name: the system directory first, then plugins."""
    import sys

    from envd_core.contexts.team import merge, read_dir, team_dir

    from_dir, warnings = read_dir(team_dir())
    for line in warnings:
        sys.stderr.write(f"envd: warning: {line}\n")
    return merge([*from_dir, *plugins.team_contexts()])


def _wrap(prefix: str, exc: EnvdError) -> EnvdError:
    """Prefix an error as upstream envd does (``failed to create context: …``)."""
    return type(exc)(f"{prefix}: {exc.message}", hint=exc.hint)


#: Gone current contexts already warned about in this process.
_WARNED_GONE: set[str] = set()

class ContextOperations:
    """Create, change, list and resolve contexts through a store, validated by plugins."""

    def __init__(self, plugins: Plugins, store: ContextStore | None = None) -> None:
        self.plugins = plugins
        self.store = store or open_store(plugins)
        self._team: dict[str, TeamContext] | None = None
        self._warned = False
        # the seed checks a distribution's first current context against the team contexts:
        # the ones read here, so a broken team file is reported once
        self.store.seed = lambda: plugins.initial_contexts(set(self.team))

    # -- reading ---------------------------------------------------------------------------
    @property
    def team(self) -> dict[str, TeamContext]:
        """The read-only team contexts (read once per process)."""
        if self._team is None:
            self._team = team_contexts(self.plugins)
        return self._team

    def load(self) -> ContextSet:
        """The user's contexts with the team contexts their names do not hide."""
        from envd_core.contexts.team import view as team_view

        layered, gone = team_view(self.store.load(), self.team)
        if gone is not None and not self._warned and gone not in _WARNED_GONE:
            # the current context was a team context that is gone: fall back loudly, once per
            # process (`envd build` opens the store through several operations objects)
            self._warned = True
            _WARNED_GONE.add(gone)
            import sys

            sys.stderr.write(
                f'envd: warning: current context "{gone}" is no longer defined; using '
                f'"{layered.current}" (choose one with `envd context use NAME`)\n'
            )
        return layered

    def _refuse_team(self, name: str, contexts: ContextSet, verb: str) -> None:
        """A team context (not hidden by a user context) cannot be changed: say so, once."""
        if name in self.team and name not in contexts.contexts:
            origin = self.team[name].origin
            raise ContextError(
                f'context "{name}" is a read-only team context ({origin}) and cannot be {verb}',
                hint=f"make your own copy: envd context export {name} | "
                f"envd context import my-{name} -",
            )

    def resolve(self, *, flag: str | None = None) -> Resolved:
        return resolve(self.load(), flag=flag)

    def types_installed(self, builder: str, runner: str) -> tuple[bool, bool]:
        """Whether a plugin provides builder type ``builder`` and runner type ``runner``."""
        return builder in self.plugins.builder_types, runner in self.plugins.runner_types

    def is_installed(self, context: Context) -> tuple[bool, bool]:
        """Whether the builder and the runner type of ``context`` are provided by a plugin."""
        return (
            context.builder in self.plugins.builder_types,
            context.runner in self.plugins.runner_types,
        )

    def builder_for(self, context: Context) -> Builder:
        """An instance of the context's builder type, or an error naming the missing package."""
        cls = self._type_for(context, "builder", context.builder)
        options = self.options_in_force(context, "builder")
        return cls(context.builder_address, options)  # type: ignore[no-any-return]

    def runner_for(self, context: Context) -> Runner:
        """An instance of the context's runner type, or an error naming the missing package."""
        cls = self._type_for(context, "runner", context.runner)
        options = self.options_in_force(context, "runner")
        return cls(context.runner_address, options)  # type: ignore[no-any-return]

    def options_in_force(self, context: Context, kind: str) -> dict[str, str]:
        """The context's options over the plugins' defaults (``envd_option_defaults``)."""
        type_name = context.builder if kind == "builder" else context.runner
        own = context.builder_options if kind == "builder" else context.runner_options
        cls = self._type_for(context, kind, type_name)
        defaults = self.plugins.option_defaults(kind, type_name, cls.options_declared())
        return {**defaults, **own}

    def _type_for(self, context: Context, noun: str, type_name: str) -> Any:
        installed = self.plugins.builder_types if noun == "builder" else self.plugins.runner_types
        if type_name in installed:
            return installed[type_name]
        raise ContextError(
            missing_type_message(noun, type_name, sorted(installed), context=context.name)
        )

    def _installed(self, noun: str, type_name: str) -> Any:
        """The class of builder/runner type ``type_name``, or one line saying what to install.

        Upstream's default builder, ``docker-container``, comes from a plugin package that may
        not be installed: the error names that package and the types that would work now.
        """
        installed = self.plugins.builder_types if noun == "builder" else self.plugins.runner_types
        if type_name in installed:
            return installed[type_name]
        raise ContextError(missing_type_message(noun, type_name, sorted(installed)))

    # -- changing --------------------------------------------------------------------------
    def build_context(
        self,
        *,
        name: str,
        builder: str,
        builder_address: str | None = None,
        runner: str = "docker",
        runner_address: str | None = None,
        builder_options: Mapping[str, str] | None = None,
        runner_options: Mapping[str, str] | None = None,
        description: str = "",
    ) -> Context:
        """Validate everything the user gave and return the context to store."""
        validate_name(name)
        btype = self._installed("builder", builder)
        rtype = self._installed("runner", runner)
        if builder_address is None or not builder_address.strip():
            if builder_address is None and btype.default_address is not None:
                builder_address = btype.default_address
            else:
                raise ValidationError(
                    f"builder `{builder}` needs --builder-address ({btype.address_help})"
                )
        address = btype.normalize_address(builder_address)
        raddress = rtype.normalize_address(runner_address) if runner_address else None
        bopts = parse_options(
            btype.options_declared(), builder_options or {}, owner=f"builder `{builder}`"
        )
        btype.check_options(bopts)
        ropts = parse_options(
            rtype.options_declared(), runner_options or {}, owner=f"runner `{runner}`"
        )
        if any(ch in description for ch in "\n\r\x00"):
            raise ValidationError("description must be a single line")
        return Context(
            name=name,
            builder=builder,
            builder_address=address,
            runner=runner,
            runner_address=raddress,
            builder_options=bopts,
            runner_options=ropts,
            description=description,
        )

    def create(self, *, use: bool = False, **fields: Any) -> Context:
        try:
            context = self.build_context(**fields)
            with self.store.transaction() as contexts:
                if context.name in self.team and context.name not in contexts.contexts:
                    raise ContextError(
                        f'context "{context.name}" is a team context '
                        f"({self.team[context.name].origin}); choose another name"
                    )
                contexts.add(context)
                if use:
                    contexts.use(context.name)
        except EnvdError as exc:
            raise _wrap("failed to create context", exc) from None
        return context

    def update(
        self,
        name: str,
        *,
        builder_address: str | None = None,
        runner: str | None = None,
        runner_address: str | None = None,
        builder_options: Mapping[str, str] | None = None,
        runner_options: Mapping[str, str] | None = None,
        unset_options: tuple[str, ...] = (),
        description: str | None = None,
    ) -> Context:
        """Change fields of an existing context; what is not given stays as it is."""
        try:
            with self.store.transaction() as contexts:
                self._refuse_team(name, contexts, "updated")
                old = contexts.get(name)
                bopts = {k: v for k, v in old.builder_options.items() if k not in unset_options}
                ropts = {k: v for k, v in old.runner_options.items() if k not in unset_options}
                new_runner = runner or old.runner
                if new_runner != old.runner:
                    ropts = {}
                new = self.build_context(
                    name=name,
                    builder=old.builder,
                    builder_address=(
                        old.builder_address if builder_address is None else builder_address
                    ),
                    runner=new_runner,
                    runner_address=(
                        old.runner_address if runner_address is None else runner_address
                    ),
                    builder_options={**bopts, **(builder_options or {})},
                    runner_options={**ropts, **(runner_options or {})},
                    description=old.description if description is None else description,
                )
                contexts.replace(new)
        except EnvdError as exc:
            raise _wrap("failed to update context", exc) from None
        return new

    def remove(self, name: str) -> Context:
        try:
            with self.store.transaction() as contexts:
                self._refuse_team(name, contexts, "removed")
                return contexts.remove(name)
        except EnvdError as exc:
            raise _wrap("failed to remove context", exc) from None

    def use(self, name: str) -> None:
        try:
            from envd_core.contexts.team import use

            with self.store.transaction() as contexts:
                use(contexts, self.team, name)
        except EnvdError as exc:
            raise _wrap(f"failed to use the specified context {name}", exc) from None

    # -- export / import -------------------------------------------------------------------
    def export(self, name: str) -> dict[str, Any]:
        """A portable document; file options travel as paths (by reference), never contents."""
        context = self.load().get(name)
        return {"format": EXPORT_FORMAT, "context": context.to_json()}

    def import_(self, name: str, document: Any, *, use: bool = False) -> Context:
        if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
            raise ValidationError(
                f"not an envd context export (expected format `{EXPORT_FORMAT}`)"
            )
        stored = Context.from_json(document.get("context"), where="import")
        return self.create(
            use=use,
            name=name,
            builder=stored.builder,
            builder_address=stored.builder_address,
            runner=stored.runner,
            runner_address=stored.runner_address,
            builder_options=stored.builder_options,
            runner_options=stored.runner_options,
            description=stored.description,
        )

    # -- upstream envd ---------------------------------------------------------------------
    def import_upstream(
        self, *, path: Path | None = None, use: bool = False, dry_run: bool = False
    ) -> ImportPlan:
        """Import upstream envd's contexts (``~/.config/envd/contexts``); idempotent.

        Reads upstream's gob file (never writes it), plans against our store and, unless
        ``dry_run``, stores the plan in one transaction: either every planned context is
        stored or, on any error, none.
        """
        from envd_core.contexts.upstream import (
            apply_plan,
            plan_import,
            read_upstream,
            upstream_file,
        )

        source = read_upstream(path or upstream_file())
        from envd_core.contexts.upstream_auth import AUTH_FILE, read_upstream_auth

        # read before anything is stored: a damaged login file stops the import unwritten
        auth_path = source.path.parent / AUTH_FILE
        auth = read_upstream_auth(auth_path) if auth_path.is_file() else None

        def plan(contexts: ContextSet) -> ImportPlan:
            return plan_import(
                source,
                contexts,
                builder_types=self.plugins.builder_types,
                runner_types=self.plugins.runner_types,
                use=use,
            )

        from envd_core.contexts.team import layer

        # planned against the team contexts too: an upstream context named like one is
        # skipped ("a different context exists here"), never stored beside it
        if dry_run:
            result = plan(layer(self.store.peek(), self.team))
        else:
            with self.store.transaction() as contexts:
                result = plan(layer(contexts, self.team))
                apply_plan(result, contexts, team=set(self.team))
        if auth is None:
            return result
        return self._import_upstream_logins(result, auth, dry_run=dry_run)

    def _import_upstream_logins(self, plan: ImportPlan, auth: UpstreamAuth, *,
                                dry_run: bool) -> ImportPlan:
        """Offer upstream's current envd-server login to the contexts the plan imported."""
        import attrs

        from envd_core.contexts.upstream_auth import plan_logins

        targets = [item.context for item in plan.items
                   if item.action in ("imported", "unchanged") and item.context is not None]
        logins = plan_logins(auth, targets, self.runner_for, dry_run=dry_run)
        return attrs.evolve(plan, logins=tuple(logins))


def missing_type_message(
    noun: str, type_name: str, installed: list[str], *, context: str | None = None
) -> str:
    """One line: which package provides ``type_name`` and what to do about it.

    ``installed`` lists the types of ``noun`` that work now, offered as the alternative when
    creating; for a stored ``context`` the alternative is another context.
    """
    provider = KNOWN_PROVIDERS.get(type_name)
    if context is None:
        usable = "|".join(installed)
        instead = f"pass `--{noun} {usable}`" if usable else f"install a {noun} plugin"
        subject = f"{noun} type `{type_name}` is"
    else:
        instead = "use another context"
        subject = f"context `{context}` uses {noun} type `{type_name}`,"
    if provider:
        return (
            f"{subject} provided by the package `{provider}`, which is not installed: "
            f"run `pip install {provider}`, or {instead}"
        )
    shown = ", ".join(installed) or "none"
    unknown = f"unknown {noun} type `{type_name}` (installed: {shown})"
    if context is not None:
        unknown = f"context `{context}` uses {unknown}"
    return f"{unknown}: install the plugin that provides it, or {instead}"


def read_document(source: str) -> Any:
    """Read a JSON document from a path or ``-`` (stdin) with a one-line error."""
    import sys

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        return json.loads(text)
    except OSError as exc:
        raise ValidationError(f"cannot read `{source}`: {exc.strerror}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError(f"`{source}` is not a JSON context export ({exc})") from None


def context_details(context: Context) -> dict[str, Any]:
    return {**context.asdict(), "builder_url": context.builder_url}
