"""The definition cache: a rebuild with nothing changed reuses the last LLB and image config.

A cached rebuild spends a fifth of its time evaluating build.envd (a forked Starlark child) and
compiling the graph to LLB; BuildKit then finds every vertex in its cache. When nothing those two
steps read has changed, their result is the same bytes, so this module keeps it.

Correctness comes first: an entry is used only when **both** match:

1. the *key*: a SHA-256 over everything known before evaluation that evaluation or compilation
   may read: the located build file and entry function, every ``envd build`` flag, the build
   context and working directory, the environment (``os.environ`` minus :data:`IGNORED_ENV`),
   the envd_core version and a signature of the source of envd_core, of each vendor build
   function's package, of the builder's plugin and of every other module imported from outside
   the standard library and installed distributions (an editable install being edited
   invalidates it), what each vendor function captured (:func:`_function_print`), the
   installed distributions (``sys.path`` directories), the evaluation limits, the builder's
   type and capabilities, the building user's uid/gid and the envd public key (dev images bake
   it in);
2. the *reads*: every file the evaluation child opened, every directory it listed and every
   path it stat'ed (:mod:`envd_core.envdfile.lang.reads`), fingerprinted when the entry was
   written (:mod:`envd_core.pipeline.fingerprints`: SHA-256 of a file's content up to
   ``HASH_LIMIT``, else size, mtime and inode; a listing's names and kinds; a stat's type,
   size and mtime) and checked again now. An entry
   is written only when no read path changed after evaluation started
   (:func:`changed_since`): the fingerprints are taken at writing time.

An evaluation that ran a subprocess or opened a connection (``include(git=…)`` fetching), one
that was not forked (nothing recorded), and a graph whose compilation downloads (VS Code
extensions) are never stored. Entries live in ``<cache dir>/definitions`` (``$ENVD_CACHE_DIR``,
else ``$XDG_CACHE_HOME/envd``, else ``~/.cache/envd``), one JSON file per key written
atomically, at most :data:`MAX_ENTRIES` (oldest removed) and :data:`MAX_ENTRY_BYTES` each; an
unreadable or malformed entry is a miss. ``ENVD_EVAL_CACHE=0`` turns the cache off.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from envd_core.pipeline.fingerprints import (
    changed_since,
    fingerprints,
    fs_now,
    still_valid,
)

# the source and installation parts of the key live in pipeline/sources.py (with what the
# resident server works out once for its children); re-exported (`as`) for callers and tests
from envd_core.pipeline.sources import editable_roots as editable_roots
from envd_core.pipeline.sources import installed_key
from envd_core.pipeline.sources import is_installed_code as is_installed_code
from envd_core.pipeline.sources import package_root as package_root
from envd_core.pipeline.sources import source_signature as source_signature

__all__ = [
    "CachedBuild", "DefinitionCache", "build_key", "cache_dir", "changed_since",
    "enabled", "fingerprints", "fs_now", "lookup", "source_signature", "store",
]

ENV_SWITCH = "ENVD_EVAL_CACHE"
ENTRY_VERSION = 2  # 2: listings with kinds, the checksum over reads
MAX_ENTRIES = 64
MAX_ENTRY_BYTES = 8 << 20
#: Variables that change between two commands of one shell and that neither evaluation nor
#: compilation reads: shell bookkeeping, and envd's own switches for measuring and for this
#: cache (``BUILDKIT_PROGRESS`` only picks the progress view, which the flags key already has).
IGNORED_ENV = frozenset({"_", "OLDPWD", "SHLVL", "ENVD_TIMINGS", ENV_SWITCH,
                         "BUILDKIT_PROGRESS",
                         # how the command reaches envd's resident process, not what it builds
                         "ENVD_RESIDENT", "ENVD_RESIDENT_DIR", "ENVD_RESIDENT_IDLE",
                         "ENVD_RESIDENT_PROFILE"})


def enabled() -> bool:
    """``ENVD_EVAL_CACHE=0`` (or ``false``/``no``/``off``) turns the cache off."""
    return os.environ.get(ENV_SWITCH, "1").lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """``<ENVD_CACHE_DIR or XDG_CACHE_HOME/envd or ~/.cache/envd>/definitions``."""
    base = os.environ.get("ENVD_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = os.path.join(xdg or os.path.join(os.path.expanduser("~"), ".cache"), "envd")
    return Path(os.path.expanduser(base)) / "definitions"


class CachedBuild:
    """A compiled build as the cache keeps it: what the solve and ``--dump-llb`` need, with the
    Definition as bytes (parsed only when a solve asks for it)."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.definition_bytes: bytes = base64.b64decode(doc["definition"], validate=True)
        self.image_config: dict[str, Any] = dict(doc["image_config"])
        self.local_dirs: dict[str, str] = dict(doc["local_dirs"])
        self.entitlements: list[str] = list(doc["entitlements"])
        self.shared_key: str = str(doc["shared_key"])
        self.warnings: list[str] = list(doc["warnings"])
        self.platform: str = str(doc["platform"])

    @property
    def definition(self) -> Any:
        """The ``pb.Definition`` message."""
        from envd_core.buildkit._pb import ops_pb2

        return ops_pb2.Definition.FromString(self.definition_bytes)

    @staticmethod
    def document(compiled: Any) -> dict[str, Any]:
        """What to store of a :class:`~envd_core.envdfile.compile.CompiledBuild`."""
        data = compiled.definition.SerializeToString(deterministic=True)
        return {
            "definition": base64.b64encode(data).decode("ascii"),
            "image_config": compiled.image_config, "local_dirs": dict(compiled.local_dirs),
            "entitlements": list(compiled.entitlements), "shared_key": compiled.shared_key,
            "warnings": list(compiled.warnings), "platform": compiled.platform,
        }


# ------------------------------------------------------------------ the key
def public_key_text() -> str | None:
    """The envd public key dev images bake in, as it is now (``None`` before the first dev
    build made the pair; that build's entry then misses once, with the key in place)."""
    from envd_core.contexts.store import config_dir
    from envd_core.environments.keys import find_key_pair

    key = find_key_pair(config_dir())
    if key is None:
        return None
    try:
        return Path(str(key) + ".pub").read_text()
    except OSError:
        return None


def _stable(value: Any) -> str:
    """``repr`` with sets and dict keys sorted: a set of strings iterates in a different order
    in every process (hash randomisation), which must not change the key."""
    # the common plain values first: the ABC checks below cost ~2 ms per build in a resident
    # child (each new type walks Mapping's registered subclasses)
    if value is None or type(value) in (str, int, bool, float, bytes):
        return repr(value)
    if isinstance(value, (set, frozenset)):
        return "{" + ", ".join(sorted(_stable(v) for v in value)) + "}"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{_stable(k)}: {_stable(v)}" for k, v in sorted(
            value.items(), key=lambda kv: repr(kv[0]))) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_stable(v) for v in value) + "]"
    return repr(value)


def _function_print(func: Any, depth: int = 0) -> str:
    """A vendor function as the key sees it: its qualified name and what it captured (default
    values, closure cells, a partial's arguments, a bound method's object, the module globals
    it names, :func:`_globals_used`). Build functions
    come from a plugin hook run in this process, where nothing is recorded: a hook that reads
    its settings and returns a closure over them gives the same name with another value. A
    value without a stable ``repr`` (one with an address) makes the entry never match: a miss,
    never a wrong hit."""
    import functools
    import types

    if depth > 4:
        return "..."
    if isinstance(func, functools.partial):
        return (f"partial({_function_print(func.func, depth + 1)}, {_stable(func.args)}, "
                f"{_stable(func.keywords)})")
    if isinstance(func, types.MethodType):
        return (f"method({_function_print(func.__func__, depth + 1)}, "
                f"{_stable(getattr(func.__self__, '__dict__', func.__self__))})")
    name = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', '')}"
    if not isinstance(func, types.FunctionType):
        state = getattr(func, "__dict__", None) if not isinstance(func, type) else None
        return f"{name}:{type(func).__qualname__}:{_stable(state)}"
    captured = []
    for cell in func.__closure__ or ():
        try:
            value = cell.cell_contents
        except ValueError:  # not yet assigned
            value = None
        captured.append(_function_print(value, depth + 1) if callable(value) else _stable(value))
    return (f"{name}({_stable(func.__defaults__)}, {_stable(func.__kwdefaults__)}, "
            f"[{', '.join(captured)}], {{{', '.join(_globals_used(func, depth))}}})")


_DATA = (str, int, float, bool, bytes, type(None), tuple, list, dict, set, frozenset)


def _globals_used(func: Any, depth: int) -> list[str]:
    """The module globals ``func`` names that hold data (a plugin's settings loaded when it
    was imported) or are functions of code outside installed distributions (its helpers, in
    turn printed): the same code over other settings must not match."""
    import types

    names: set[str] = set()
    codes = [func.__code__]
    while codes:  # nested code: comprehensions, inner functions
        code = codes.pop()
        names.update(code.co_names)
        codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    out = []
    for name in sorted(names):
        if name not in func.__globals__:
            continue
        value = func.__globals__[name]
        if isinstance(value, _DATA):
            out.append(f"{name}={_stable(value)}")
        elif (isinstance(value, types.FunctionType) and value is not func
              and not is_installed_code(value.__code__.co_filename)):
            out.append(f"{name}={_function_print(value, depth + 1)}")
    return out


def build_key(*, flags: Mapping[str, Any], build_file: Path, context_dir: Path,
              builder: Any, extra_functions: Mapping[str, Callable[..., Any]],
              limit_defaults: Mapping[str, str] | None, public_key: str | None) -> str:
    """The SHA-256 key of everything known before evaluation (see the module docstring)."""
    import envd_core

    roots = {package_root("envd_core"), package_root(type(builder).__module__)}
    roots.update(package_root(getattr(f, "__module__", "") or "")
                 for f in extra_functions.values())
    # and every other module imported from outside the standard library and installed
    # distributions (a vendor function's helpers in another editable package); installed
    # ones are keyed by their sys.path directories
    roots.update(editable_roots())
    capabilities = {name: _stable(getattr(builder, name, None)) for name in (
        "name", "url", "supports_merge_op", "exporter_applies_config", "exporters", "can_push",
        "option_values")}
    doc = {
        "version": [ENTRY_VERSION, envd_core.__version__, sys.version],
        "flags": {k: _stable(v) for k, v in sorted(flags.items())},
        "build_file": str(build_file), "context": str(context_dir), "cwd": os.getcwd(),
        "env": sorted((k, v) for k, v in os.environ.items() if k not in IGNORED_ENV),
        "sources": source_signature(r for r in roots if r),
        "installed": installed_key(),
        "functions": sorted(f"{name}={_function_print(f)}" for name, f in extra_functions.items()),
        "limits": sorted((limit_defaults or {}).items()),
        "builder": [type(builder).__module__, type(builder).__qualname__, capabilities],
        "user": [os.getuid(), os.getgid()] if hasattr(os, "getuid") else None,
        "public_key": public_key,
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


# ------------------------------------------------------------------ entries
def lookup(key: str) -> tuple[bool, dict[str, CachedBuild]] | None:
    """The cached results per platform (and whether the image is a dev image) for ``key``
    when every recorded read still matches; ``None`` on a miss or an unusable entry."""
    path = cache_dir() / f"{key}.json"
    try:
        with open(path, "rb") as fh:
            doc = json.loads(fh.read())
        if doc.get("version") != ENTRY_VERSION or doc.get("key") != key:
            return None
        if doc.get("sum") != _checksum(doc) or not still_valid(doc["reads"]):
            return None
        builds = {platform: CachedBuild(entry) for platform, entry in doc["builds"].items()}
        return bool(doc["dev"]), builds
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing, half-written by a crashed writer, or from another version


def _checksum(doc: Mapping[str, Any]) -> str:
    """SHA-256 of the stored builds, reads and dev flag: an entry changed by anything but
    :func:`store` (a disk error, an edit) is a miss rather than a wrong definition; an entry
    that lost its reads would match any state of the files."""
    covered = {k: doc[k] for k in ("reads", "dev", "builds")}
    return hashlib.sha256(json.dumps(covered, sort_keys=True).encode()).hexdigest()


def store(key: str, reads: Mapping[str, list[str]], *, dev: bool,
          builds: Mapping[str, Any], since: int | None = None) -> None:
    """Write the entry for ``key`` (atomically; errors are ignored: it is only a cache).
    ``since``: when evaluation started (:func:`fs_now`); nothing is written when a read path
    changed after it (:func:`changed_since`)."""
    from envd_core.atomic import write_atomic
    from envd_core.errors import EnvdError

    if since is not None and changed_since(reads, since) is not None:
        return
    documents = {platform: CachedBuild.document(c) for platform, c in builds.items()}
    doc: dict[str, Any] = {"version": ENTRY_VERSION, "key": key, "reads": fingerprints(reads),
                           "dev": dev, "builds": documents}
    doc["sum"] = _checksum(doc)
    data = json.dumps(doc, separators=(",", ":")).encode()
    if len(data) > MAX_ENTRY_BYTES:
        return
    folder = cache_dir()
    with contextlib.suppress(OSError, EnvdError):
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(folder / f"{key}.json", data)
        _prune(folder)


def _prune(folder: Path, keep: int | None = None) -> None:
    """Keep the ``keep`` (default :data:`MAX_ENTRIES`) most recently written ``.json`` files
    of ``folder``; the reuse records (pipeline/reuse.py) are pruned the same way."""
    keep = MAX_ENTRIES if keep is None else keep
    entries = []
    for item in os.scandir(folder):
        if item.name.endswith(".json"):
            with contextlib.suppress(OSError):
                entries.append((item.stat().st_mtime_ns, item.path))
    for _, path in sorted(entries)[:-keep]:
        with contextlib.suppress(OSError):
            os.unlink(path)


class DefinitionCache:
    """The cache as one build uses it: looked up before evaluation (:attr:`hit`), filled as the
    build evaluates (:meth:`evaluated`) and compiles each platform (:meth:`compiled`)."""

    def __init__(self, key: str, platforms: list[str], public_key: str | None = None) -> None:
        self.key = key
        self.platforms = platforms
        #: The public key the key was computed with.
        self.public_key = public_key
        #: The cached builds per platform when the entry matched, else ``None``.
        self.hit: dict[str, CachedBuild] | None = None
        self._reads: dict[str, list[str]] | None = None
        self._dev = False
        self._builds: dict[str, Any] = {}
        #: When evaluation started, on the files' clock (set by :meth:`open`).
        self.started = fs_now()

    @classmethod
    def open(cls, request: Any, *, context_dir: Path, builder: Any,
             extra_functions: Mapping[str, Callable[..., Any]],
             limit_defaults: Mapping[str, str] | None, platforms: list[str],
             ) -> DefinitionCache | None:
        """The cache for this build, looked up; ``None`` when ``ENVD_EVAL_CACHE`` is off."""
        if not enabled():
            return None
        import attrs

        from envd_core.envdfile.buildflags import locate_build_file, parse_from

        spec = parse_from(request.from_spec)
        flags = {f.name: getattr(request, f.name) for f in attrs.fields(type(request))
                 if f.name not in ("causes", "reuse")}  # neither changes the definition
        public_key = public_key_text()
        key = build_key(flags=flags, build_file=locate_build_file(context_dir, spec),
                        context_dir=context_dir, builder=builder,
                        extra_functions=extra_functions, limit_defaults=limit_defaults,
                        public_key=public_key)
        cache = cls(key, platforms, public_key)
        found = lookup(key)
        if found is not None and set(found[1]) == set(platforms):
            cache.hit = found[1]
        from envd_core import timings

        timings.mark("definition cache")
        return cache

    def evaluated(self, graph: Any, reads: Any) -> None:
        """Record the evaluation: cacheable when it was recorded, stayed pure and the graph
        compiles without downloading (VS Code extensions are fetched at compile time)."""
        if reads is None or reads.impure or graph.vscode_extensions:
            return
        self._reads = reads.as_lists()
        # modules the evaluation imported: their source is an input unless the key has it
        self._reads["opened"] = sorted({*self._reads["opened"], *(
            f for f in self._reads.pop("imported", []) if not is_installed_code(f))})
        self._dev = bool(graph.dev)

    def compiled(self, platform: str, compiled: Any) -> None:
        """Keep one platform's compiled build; store the entry once every platform has one."""
        if self._reads is None:
            return
        self._builds[platform] = compiled
        if set(self._builds) != set(self.platforms):
            return
        if self._dev and public_key_text() != self.public_key:
            # compiling a dev image made the key pair (first dev build): the definition bakes
            # a key the cache key does not name; stored, it would outlive a deleted pair
            return
        store(self.key, self._reads, dev=self._dev, builds=self._builds, since=self.started)
