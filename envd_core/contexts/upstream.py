"""Upstream envd's context store: read it, and plan importing it into ours.

Upstream envd (Go) keeps its contexts in ``~/.config/envd/contexts`` (always under ``$HOME``;
it ignores ``XDG_CONFIG_HOME``), a Go ``encoding/gob`` stream of one value::

    EnvdContext{Current string; Contexts []Context}
    Context{Name string; Builder BuilderType; BuilderAddress string; Runner RunnerType;
            RunnerAddress *string}

Named string types travel as strings, the pointer as the string it points to, and fields that
hold zero values are left out. Upstream decodes into a value pre-filled with its default
context, so an absent ``Current`` reads as ``default`` and absent ``Contexts`` as the default
context alone; this reader does the same.

This module only ever *reads* that file. Anything but exactly this shape (a field upstream does
not write today, another type, a corrupt or truncated stream) is refused with one line: a
context imported without the meaning of a field we do not know could build somewhere else
than the user expects.

Importing is planned first (:func:`plan_import`), against the contexts already stored, so the
same plan serves ``--dry-run`` and the real import, and a second import finds every context
``unchanged``. Upstream's envd-server logins (``auth``) are offered to the imported contexts by
:mod:`envd_core.contexts.upstream_auth`; upstream's SSH key pair is reused where it lies (see
:data:`NOT_YET_IMPORTED`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from envd_core.contexts.model import DEFAULT_NAME, Context, ContextSet
from envd_core.contexts.validate import validate_name
from envd_core.errors import EnvdError, StoreError
from envd_core.plugins import KNOWN_PROVIDERS

if TYPE_CHECKING:
    from envd_core.contexts import gob

FILE_NAME = "contexts"

#: What upstream envd v1.3.4 writes: struct field -> kind ("string", or the nested struct).
_ENVD_CONTEXT_FIELDS = {"Current": "string", "Contexts": "[]Context"}
_CONTEXT_FIELDS = ("Name", "Builder", "BuilderAddress", "Runner", "RunnerAddress")

#: Upstream files next to ``contexts`` that a later import will take over, and which work
#: will do it. Listed in the report so users know they were seen, not forgotten.
NOT_YET_IMPORTED = {
    "id_rsa_envd": "SSH key pair (reused by environments once `envd up` exists)",
}


class UpstreamStoreError(StoreError):
    """Upstream's context file cannot be read or is not what upstream envd writes."""


def upstream_dir(home: Path | None = None) -> Path:
    """Upstream envd's config directory: ``$HOME/.config/envd`` (it ignores XDG)."""
    return (home or Path.home()) / ".config" / "envd"


def upstream_file(home: Path | None = None) -> Path:
    """Path of upstream envd's gob context store."""
    return upstream_dir(home) / FILE_NAME


@attrs.frozen
class UpstreamContext:
    """One context as upstream stores it: types and addresses, the address without a scheme."""

    name: str
    builder: str
    builder_address: str
    runner: str
    runner_address: str | None = None

    @property
    def builder_url(self) -> str:
        return f"{self.builder}://{self.builder_address}"


#: The context upstream's reader starts from (``home.defaultContext``).
_DEFAULT = UpstreamContext(DEFAULT_NAME, "moby-worker", "envd_buildkitd", "docker")


@attrs.frozen
class UpstreamContexts:
    """Everything upstream's context file holds, and where it was read from."""

    path: Path
    current: str
    contexts: tuple[UpstreamContext, ...]


def read_upstream(path: Path) -> UpstreamContexts:
    """Read upstream's gob context file at ``path``; never writes it.

    Raises :class:`UpstreamStoreError` (one line naming the file) when it is missing,
    unreadable, corrupt, truncated, empty, or holds anything upstream envd does not write.
    """
    from envd_core.contexts import gob  # only an import pays for the reader

    where = f"upstream envd's context file `{path}`"
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UpstreamStoreError(
            f"{where} does not exist",
            hint="upstream envd writes it on its first run; nothing to import",
        ) from None
    except OSError as exc:
        raise UpstreamStoreError(f"cannot read {where}: {exc.strerror}") from None
    try:
        stream = gob.decode(data)
        current, contexts = _interpret(stream)
    except gob.GobError as exc:
        raise UpstreamStoreError(
            f"{where} is not a context store upstream envd writes ({exc})",
            hint="nothing was imported and both stores are unchanged",
        ) from None
    return UpstreamContexts(path, current, contexts)


def _interpret(stream: gob.GobStream) -> tuple[str, tuple[UpstreamContext, ...]]:
    from envd_core.contexts import gob

    if len(stream.values) != 1:
        raise gob.GobError(f"{len(stream.values)} values; upstream writes one")
    (top,) = stream.values
    envd_context = _check_struct(stream, top.type_id, _ENVD_CONTEXT_FIELDS, "EnvdContext")
    value: Mapping[str, Any] = top.value
    current = value.get("Current") or DEFAULT_NAME
    if "Contexts" not in value:
        return current, (_DEFAULT,)
    slice_type = stream.types[envd_context.fields[_field_index(envd_context, "Contexts")][1]]
    assert isinstance(slice_type, gob.SliceType)  # checked by _check_struct
    _check_struct(stream, slice_type.elem, dict.fromkeys(_CONTEXT_FIELDS, "string"), "Context")
    contexts = []
    entries = value["Contexts"]
    for entry in entries:
        # Upstream decodes into a list already holding its default context. Go's gob reuses
        # that element when the stored list fits in it (one entry): fields absent from that
        # entry keep the default's values. A longer list is decoded into a fresh, zeroed one.
        # (Upstream's own `ls` shows both: tcp://envd_buildkitd for a lone context created
        # with an empty address, tcp:// for the same context followed by another.)
        base = _DEFAULT if len(entries) == 1 else UpstreamContext("", "", "", "")
        contexts.append(
            UpstreamContext(
                name=entry.get("Name", base.name),
                builder=entry.get("Builder", base.builder),
                builder_address=entry.get("BuilderAddress", base.builder_address),
                runner=entry.get("Runner", base.runner),
                runner_address=entry.get("RunnerAddress", base.runner_address),
            )
        )
    return current, tuple(contexts)


def _field_index(struct: gob.StructType, name: str) -> int:
    return [field for field, _ in struct.fields].index(name)


def _check_struct(
    stream: gob.GobStream, type_id: int, expected: Mapping[str, str], what: str
) -> gob.StructType:
    """``type_id`` is a struct whose fields are among ``expected``, each of the expected kind."""
    from envd_core.contexts import gob

    wire = stream.types.get(type_id)
    if not isinstance(wire, gob.StructType) or wire.name != what:
        # gob names a struct type by its Go name: another file of upstream's (`auth` holds an
        # EnvdAuth) or any other program's gob is refused here, before its fields are read
        raise gob.GobError(f"the value is a {stream.name_of(type_id)}, not {what}")
    for field, field_type in wire.fields:
        kind = expected.get(field)
        if kind is None:
            raise gob.GobError(
                f"{what} has a field `{field}` upstream envd v1.3.4 does not write; a newer "
                "upstream wrote it and this envd cannot import it safely"
            )
        if kind == "string":
            ok = field_type == gob.STRING
        else:
            element = stream.types.get(field_type)
            ok = isinstance(element, gob.SliceType) and isinstance(
                stream.types.get(element.elem), gob.StructType
            )
        if not ok:
            raise gob.GobError(
                f"field `{what}.{field}` is a {stream.name_of(field_type)}, not a {kind}"
            )
    return wire


# -- planning --------------------------------------------------------------------------------
IMPORTED, UNCHANGED, SKIPPED = "imported", "unchanged", "skipped"


@attrs.frozen
class ImportItem:
    """What importing one upstream context does: ``imported``, ``unchanged`` or ``skipped``.

    ``context`` is what is (or would be) stored; ``notes`` are remarks that do not stop the
    import, such as a type no installed plugin provides (imported anyway, as ``ls`` marks it).
    """

    upstream: UpstreamContext
    action: str
    reason: str = ""
    context: Context | None = None
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "context": self.upstream.name,
            "action": self.action,
            "builder": self.upstream.builder,
            "builder_addr": (self.context or self.upstream).builder_url,
            "runner": self.upstream.runner,
        }
        runner_address = (self.context or self.upstream).runner_address
        if runner_address:
            data["runner_addr"] = runner_address
        if self.reason:
            data["reason"] = self.reason
        data["notes"] = list(self.notes)
        return data


@attrs.frozen
class ImportPlan:
    """The outcome of importing upstream's contexts, context by context, and the current one."""

    source: Path
    items: tuple[ImportItem, ...]
    upstream_current: str
    #: ``switched``, ``unchanged`` (already current), ``not-switched`` or ``not-requested``.
    current_action: str
    current_reason: str = ""
    #: Upstream's current envd-server login, offered to each context whose runner keeps
    #: logins (:mod:`envd_core.contexts.upstream_auth`); never holds a token.
    logins: tuple[Any, ...] = ()

    def counts(self) -> dict[str, int]:
        return {
            action: sum(item.action == action for item in self.items)
            for action in (IMPORTED, UNCHANGED, SKIPPED)
        }

    def to_json(self) -> dict[str, Any]:
        current: dict[str, Any] = {"upstream": self.upstream_current, "action": self.current_action}
        if self.current_reason:
            current["reason"] = self.current_reason
        return {
            "source": str(self.source),
            "contexts": [item.to_json() for item in self.items],
            "current": current,
            "counts": self.counts(),
            "logins": [item.to_json() for item in self.logins],
            "not_imported": _not_yet_imported(self.source.parent),
        }


def _not_yet_imported(directory: Path) -> dict[str, str]:
    return {name: why for name, why in NOT_YET_IMPORTED.items() if (directory / name).exists()}


TypeLookup = Mapping[str, Any]


def plan_import(
    upstream: UpstreamContexts,
    ours: ContextSet,
    *,
    builder_types: TypeLookup,
    runner_types: TypeLookup,
    use: bool = False,
) -> ImportPlan:
    """Decide, for each upstream context, what importing it into ``ours`` does; change nothing.

    ``builder_types``/``runner_types`` map installed type names to their classes; addresses of
    installed types are normalised by them, others are kept exactly as upstream stored them.
    """
    items: list[ImportItem] = []
    seen: set[str] = set()
    for entry in upstream.contexts:
        if entry.name in seen:
            items.append(ImportItem(entry, SKIPPED, "listed twice in upstream's file"))
            continue
        seen.add(entry.name)
        items.append(_plan_one(entry, ours, builder_types, runner_types))
    action, reason = _plan_current(upstream.current, items, ours, use)
    return ImportPlan(upstream.path, tuple(items), upstream.current, action, reason)


def _plan_one(
    entry: UpstreamContext, ours: ContextSet, builder_types: TypeLookup, runner_types: TypeLookup
) -> ImportItem:
    try:
        validate_name(entry.name)
        context, notes = _convert(entry, builder_types, runner_types)
    except EnvdError as exc:
        return ImportItem(entry, SKIPPED, f"{exc.message}; create it by hand if you need it")
    existing = ours.contexts.get(entry.name)
    if existing is None:
        return ImportItem(entry, IMPORTED, context=context, notes=notes)
    if _same(existing, context):
        return ImportItem(entry, UNCHANGED, "already here with the same settings",
                          context=existing, notes=notes)
    runner_flag = f" --runner-address {entry.runner_address}" if entry.runner_address else ""
    return ImportItem(
        entry,
        SKIPPED,
        f"a different context `{entry.name}` exists here ({existing.builder_url}); to keep "
        f"both, run `envd context create --name {entry.name}-upstream --builder {entry.builder} "
        f"--builder-address {entry.builder_address} --runner {entry.runner}{runner_flag}`",
        context=existing,
        notes=notes,
    )


def _convert(
    entry: UpstreamContext, builder_types: TypeLookup, runner_types: TypeLookup
) -> tuple[Context, tuple[str, ...]]:
    if not entry.builder or not entry.runner:
        raise StoreError("upstream's entry has no builder or runner type")
    notes: list[str] = []
    address = entry.builder_address
    btype = builder_types.get(entry.builder)
    if btype is None:
        notes.append(_not_installed("builder", entry.builder))
    else:
        address = btype.normalize_address(address)
    runner_address = entry.runner_address or None
    rtype = runner_types.get(entry.runner)
    if rtype is None:
        notes.append(_not_installed("runner", entry.runner))
    elif runner_address is not None:
        runner_address = rtype.normalize_address(runner_address)
    context = Context(
        name=entry.name,
        builder=entry.builder,
        builder_address=address,
        runner=entry.runner,
        runner_address=runner_address,
        description="imported from upstream envd",
    )
    return context, tuple(notes)


def _not_installed(noun: str, type_name: str) -> str:
    provider = KNOWN_PROVIDERS.get(type_name)
    fix = f"`pip install {provider}`" if provider else "install the plugin that provides it"
    return f"{noun} type `{type_name}` is not installed ({fix})"


def _same(a: Context, b: Context) -> bool:
    """Same builder and runner: options and description are ours alone and do not count."""
    return (a.builder, a.builder_address, a.runner, a.runner_address or None) == (
        b.builder, b.builder_address, b.runner, b.runner_address or None
    )


def _plan_current(
    name: str, items: list[ImportItem], ours: ContextSet, use: bool
) -> tuple[str, str]:
    item = next((i for i in items if i.upstream.name == name), None)
    if item is None:
        return "not-switched", f"upstream's current context `{name}` is not in its list"
    if item.action == SKIPPED:
        return "not-switched", f"`{name}` was skipped"
    if ours.current == name:
        return "unchanged", ""
    if not use:
        return "not-requested", "pass --use to make it current here too"
    return "switched", ""


def apply_plan(
    plan: ImportPlan, contexts: ContextSet, *, team: Collection[str] = ()
) -> None:
    """Store what ``plan`` imports into ``contexts`` (a store transaction's set).

    ``team`` names read-only team contexts the plan may switch to: the store then keeps only
    the name as current, as ``envd context use`` does.
    """
    for item in plan.items:
        if item.action == IMPORTED and item.context is not None:
            contexts.add(item.context)
    if plan.current_action == "switched":
        if plan.upstream_current in team and plan.upstream_current not in contexts.contexts:
            contexts.current = plan.upstream_current
        else:
            contexts.use(plan.upstream_current)


# -- first run -------------------------------------------------------------------------------
HINT_MARKER = ".upstream-import-hint"


def first_run_hint(
    peek: Callable[[], ContextSet], config_dir: Path, home: Path | None = None
) -> str | None:
    """The line suggesting an import, once: upstream's file exists and ours holds only default.

    ``peek`` reads our contexts without writing; it is called only when upstream's file exists
    and the hint was not shown yet, so the common case costs two ``stat`` calls. Returns
    ``None`` when the hint does not apply or was already shown. Showing it is recorded by
    creating an empty marker in our config directory; if that cannot be written the hint is not
    shown at all, so it can never repeat on every command.
    """
    source = upstream_file(home)
    marker = config_dir / HINT_MARKER
    if not source.is_file() or marker.exists() or list(peek().contexts) != [DEFAULT_NAME]:
        return None
    try:
        config_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except OSError:
        return None
    return (
        f"envd: found upstream envd's contexts in {source}; import them with "
        "`envd context import --from-upstream` (add --dry-run to preview)"
    )
