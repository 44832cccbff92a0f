"""Evaluate `build.envd` files with starlark-pyo3 into a :class:`BuildGraph`.

Why starlark-pyo3 (starlark-rust): it exposes Python callables to scripts, supports ``load()``
through a Python loader, reports file/line/column with caret excerpts, and offers a cancellation
hook and call-stack limit. starlark-go's Python binding crashed the interpreter when a script
called back into Python, and a hand-written interpreter would not be Starlark.

Sandbox: the Starlark standard library has no file, network, process or clock access; we add
only ``struct`` and our built-ins. ``load()`` is served by :meth:`_Evaluator.load`, which only
reads ``.envd`` files under the allowed roots (the build context), caches modules per file and
rejects cycles.

Bounds: every evaluation runs under :class:`~envd_core.envdfile.lang.limits.EvalLimits` (nesting
depth checked before parsing, memory, steps and wall time checked at starlark-rust's cancellation
checkpoints, rlimits in a forked child as the backstop; see :mod:`.limits` and :mod:`.isolate`),
so a hostile file ends in one located error, never a crash, a hang or the OOM killer.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from envd_core.envdfile.errors import (
    BuildArgumentError,
    BuildFileError,
    BuildFileNotFoundError,
    BuildFunctionError,
    UnsupportedBuildError,
)
from envd_core.envdfile.graph import BuildGraph
from envd_core.envdfile.include import IncludeSpec
from envd_core.envdfile.lang import args as _args
from envd_core.envdfile.lang.builtins import UNBUILDABLE, builtin_table, data_paths
from envd_core.envdfile.lang.limits import EvalLimits, Guard, check_nesting, limits_in_force
from envd_core.errors import EnvdError

if TYPE_CHECKING:
    import starlark

    from envd_core.envdfile.lang.reads import Reads

#: Entry function called when ``--from`` names none.
DEFAULT_FUNCTION = "build"
DEFAULT_TIMEOUT = EvalLimits().time
MAX_CALLSTACK = 1000

_LOCATION_RE = re.compile(r"-->\s+(?P<file>.+?):(?P<line>\d+):(?P<col>\d+)")
_DEF_RE = re.compile(r"^def\s+([A-Za-z_]\w*)\s*\(", re.MULTILINE)
_UNKNOWN_VAR_RE = re.compile(r"Variable `(?P<name>[^`]+)` not found(, did you mean `[^`]+`\?)?")
_UNKNOWN_ATTR_RE = re.compile(
    r"Object of type `struct` has no attribute `(?P<name>[^`]+)`(, did you mean `[^`]+`\?)?"
)
_PY_EXC_RE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception): ")
_PREFIX = "__envd_"


class _Evaluator:
    """One evaluation: the graph, the built-ins bound to it and the module cache."""

    def __init__(
        self,
        graph: BuildGraph,
        roots: list[Path],
        extra_functions: Mapping[str, Callable[..., Any]],
        guard: Guard,
        check_buildable: bool = True,
    ) -> None:
        import starlark as sl

        self.sl = sl
        self.graph = graph
        self.roots = [r.resolve() for r in roots]
        self.table = builtin_table(extra_functions)
        #: Standard names refused at the call (a vendor override is taken as buildable).
        self.refused = {n: r for n, r in UNBUILDABLE.items()
                        if check_buildable and n not in extra_functions}
        self.pending: EnvdError | None = None
        self.cache: dict[Path, starlark.FrozenModule] = {}
        self.loading: list[Path] = []
        self.guard = guard
        #: ``include(git=...)`` calls per file (see envd_core.envdfile.include) and checkouts.
        self.includes: dict[Path, list[IncludeSpec]] = {}
        self.include_roots: list[Path] = []
        self.globals = sl.Globals.extended_by([sl.LibraryExtension.StructType])
        self.prelude = sl.parse("<envd prelude>", self._prelude_source(), sl.Dialect.standard())

    # ------------------------------------------------------------ built-ins
    def _wrap(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                args = tuple(_args.normalise(a) for a in args)
                kwargs = {k: _args.normalise(v) for k, v in kwargs.items()}
                try:
                    bound = _args.bind(name, func, args, kwargs)
                except (TypeError, ValueError):
                    # Callables without an inspectable signature (C functions): call directly.
                    return func(self.graph, *args, **kwargs)
                result = func(self.graph, *bound.args[1:], **bound.kwargs)
                if name in self.refused:
                    raise UnsupportedBuildError(
                        f"`{name}` cannot be built by this envd: {self.refused[name]}; remove "
                        "the call or build this file with upstream envd"
                    )
                return result
            except EnvdError as exc:
                self.pending = exc
                raise
            except Exception as exc:  # a vendor function's bug: name it, keep one line
                self.pending = BuildArgumentError(
                    f"`{name}` failed: {type(exc).__name__}: {exc}"
                )
                raise

        call.__name__ = name.replace(".", "_")
        return call

    def _prelude_source(self) -> str:
        """Starlark defining ``install = struct(...)`` etc. from the registered callables."""
        modules: dict[str, list[str]] = {}
        for dotted in self.table:
            if "." in dotted:
                mod, attr = dotted.split(".", 1)
                modules.setdefault(mod, []).append(attr)
        lines = []
        for mod, names in sorted(modules.items()):
            members = [f"{a}={_PREFIX}{mod}_{a}" for a in sorted(names)]
            if mod == "data":
                paths = ", ".join(f'{k}="{v}"' for k, v in sorted(data_paths().items()))
                members.append(f"path=struct({paths})")
            lines.append(f"{mod} = struct({', '.join(members)})")
        return "\n".join(lines) + "\n"

    def _new_module(self) -> starlark.Module:
        module = self.sl.Module()
        for dotted, func in self.table.items():
            wrapped = self._wrap(dotted, func)
            if "." in dotted:
                mod, attr = dotted.split(".", 1)
                module.add_callable(f"{_PREFIX}{mod}_{attr}", wrapped)
            else:
                module.add_callable(dotted, wrapped)
        module["_build_context_dir"] = str(self.roots[0])
        self.sl.eval(module, self.prelude, self.globals)
        return module

    def _options(self) -> starlark.EvalOptions:
        return self.sl.EvalOptions(
            check_cancelled=self.guard,
            max_callstack_size=MAX_CALLSTACK,
        )

    # ------------------------------------------------------------ files
    def display(self, path: Path) -> str:
        """The name used in messages: relative to the build context when inside it."""
        for root in self.roots:
            try:
                return path.relative_to(root).as_posix()
            except ValueError:
                continue
        return str(path)

    def eval_file(self, path: Path) -> starlark.FrozenModule:
        """Evaluate one file (top-level statements run now) and freeze its module."""
        path = path.resolve()
        if path in self.cache:
            return self.cache[path]
        name = self.display(path)
        source = _read(path, name)
        check_syntax_line(source, name)
        check_nesting(source, name, self.guard.limits.depth)
        if "include" in source:
            from envd_core.envdfile.include import rewrite_includes

            source, self.includes[path] = rewrite_includes(source)
        sl = self.sl
        self.loading.append(path)
        try:
            try:
                ast = sl.parse(name, source, sl.Dialect.standard())
                module = self._new_module()
                sl.eval_with(
                    self._options(), module, ast, self.globals,
                    sl.FileLoader(lambda module_id: self.load(module_id, path)),
                )
            except sl.StarlarkError as exc:
                raise _relocate_parse_error(self.translate(exc), source) from None
            frozen = module.freeze()
        finally:
            self.loading.pop()
        self.cache[path] = frozen
        return frozen

    def load(self, module_id: str, importer: Path) -> starlark.FrozenModule:
        """The ``load()`` hook: resolve ``module_id`` inside the roots, detect cycles, cache."""
        try:
            if module_id.startswith("@envd-include"):
                return self.load_include(module_id, importer)
            target = self.resolve_load(module_id, importer)
            if target in self.loading:
                chain = " -> ".join(self.display(p) for p in [*self.loading, target])
                raise BuildFileError(f"load cycle: {chain}; break the cycle between these files")
            return self.eval_file(target)
        except EnvdError as exc:
            self.pending = exc
            raise

    def load_include(self, module_id: str, importer: Path) -> starlark.FrozenModule:
        """Serve the module ids :func:`~envd_core.envdfile.include.rewrite_includes` writes."""
        from envd_core.envdfile import include as inc

        if module_id.startswith(inc.FILE_PREFIX):
            return self.eval_file(Path(module_id[len(inc.FILE_PREFIX):]))
        spec = self.includes[importer][int(module_id[len(inc.INCLUDE_PREFIX):])]
        try:
            checkout = inc.fetch(spec)
            source = inc.module_source(checkout, spec.url)
        except BuildArgumentError as exc:
            raise BuildFileError(exc.message, file=self.display(importer), line=spec.line,
                                 column=spec.column, hint=exc.hint) from None
        self.include_roots.append(checkout.resolve())
        module = self._new_module()
        self.sl.eval_with(self._options(), module, self.sl.parse(
            f"include({spec.url})", source, self.sl.Dialect.standard()), self.globals,
            self.sl.FileLoader(lambda mid: self.load(mid, checkout)))
        return module.freeze()

    def resolve_load(self, module_id: str, importer: Path) -> Path:
        """``//x.envd`` is relative to the build context, anything else to the importer."""
        if not module_id.endswith(".envd"):
            raise BuildArgumentError(
                f"load(\"{module_id}\") must name a `.envd` file inside the build context"
            )
        if module_id.startswith("//"):
            target = self.roots[0] / module_id[2:]
        elif module_id.startswith("/"):
            raise BuildArgumentError(
                f"load(\"{module_id}\") uses an absolute path; use `//path` (build context) "
                "or a path relative to the loading file"
            )
        else:
            target = importer.parent / module_id
        resolved = target.resolve()
        allowed = [*self.roots, *self.include_roots]  # an included file loads its siblings
        if not any(resolved == r or r in resolved.parents for r in allowed):
            raise BuildArgumentError(
                f"load(\"{module_id}\") points outside the build context `{self.roots[0]}`; "
                "build files may only load files inside it"
            )
        if not resolved.is_file():
            raise BuildFileNotFoundError(f"load(\"{module_id}\"): no such file `{resolved}`")
        return resolved

    # ------------------------------------------------------------ calls
    def call(self, frozen: starlark.FrozenModule, path: Path, function: str) -> None:
        """Call the entry ``function`` of an evaluated file with no arguments."""
        name = self.display(path)
        try:
            frozen.call_with(self._options(), function)
        except self.sl.StarlarkError as exc:
            text = str(exc)
            if self.pending is None and f"has no symbol `{function}`" in text:
                defined = _DEF_RE.findall(path.read_text(encoding="utf-8", errors="replace"))
                close = difflib.get_close_matches(function, defined, n=3, cutoff=0.5)
                hint = f"; did you mean {_quote_list(close)}?" if close else ""
                have = f" (defined: {', '.join(defined)})" if defined else ""
                raise BuildFunctionError(
                    f"no function `{function}`{hint}{have}; choose one with "
                    f"`--from {name}:<function>`",
                    file=name,
                ) from None
            raise self.translate(exc, entry=(name, function)) from None

    # ------------------------------------------------------------ errors
    def translate(self, exc: Exception, entry: tuple[str, str] | None = None) -> EnvdError:
        """Turn a StarlarkError (+ any error a built-in left pending) into one BuildFileError."""
        text = str(exc)
        pending, self.pending = self.pending, None
        if isinstance(pending, BuildFileError) and pending.file:
            return pending  # already located (an error inside a loaded file)
        matches = list(_LOCATION_RE.finditer(text))
        loc = matches[-1] if matches else None
        file = loc.group("file") if loc else (entry[0] if entry else None)
        line = int(loc.group("line")) if loc else None
        col = int(loc.group("col")) if loc else None
        excerpt = text[loc.end():].strip("\n") if loc else None
        if pending is not None:
            cls = type(pending) if isinstance(pending, BuildFileError) else BuildFileError
            return cls(
                pending.message, file=file, line=line, column=col, excerpt=excerpt,
                hint=pending.hint,
            )
        message = _error_line(text)
        hint = None
        if "Evaluation cancelled" in message:
            message, hint = self.guard.message()
        elif "call stack overflow" in message:
            message = "recursion is too deep (call stack overflow); look for endless recursion"
        elif "serde::serialize" in message:
            message = "a built-in function got a value it cannot take (function or struct)"
        elif entry and "Missing parameter" in message:
            message = (
                f"entry function `{entry[1]}` is called with no arguments; "
                f"give its parameters defaults ({message})"
            )
        else:
            message = self._suggest(message, excerpt or "")
        return BuildFileError(message, file=file, line=line, column=col, excerpt=excerpt,
                              hint=hint)

    def _suggest(self, message: str, excerpt: str) -> str:
        """Replace Starlark's single guess by difflib suggestions over envd's own names."""
        var = _UNKNOWN_VAR_RE.search(message)
        if var:
            name = var.group("name")
            universe = [n for n in self.table if "." not in n]
            modules = sorted({n.split(".", 1)[0] for n in self.table if "." in n} | {"data"})
            close = difflib.get_close_matches(name, universe + modules, n=3, cutoff=0.6)
            if not close:  # `python_packages` written without its module
                members = {n.split(".", 1)[1]: n for n in self.table if "." in n}
                close = [members[m] for m in difflib.get_close_matches(name, list(members), n=3)]
            hint = f"; did you mean {_quote_list(close)}?" if close else ""
            return f"unknown name `{name}`{hint}"
        attr = _UNKNOWN_ATTR_RE.search(message)
        if attr:
            name = attr.group("name")
            owner = re.search(r"([A-Za-z_]\w*)\s*\.\s*" + re.escape(name), excerpt)
            mod = owner.group(1) if owner else None
            in_module = [n.split(".", 1)[1] for n in self.table if mod and n.startswith(mod + ".")]
            if mod and in_module:
                close = difflib.get_close_matches(name, in_module, n=3, cutoff=0.5)
                hint = f"; did you mean {_quote_list(close, prefix=mod + '.')}?" if close else ""
                return f"`{mod}` has no function `{name}`{hint}"
        return message


def _relocate_parse_error(error: EnvdError, source: str) -> EnvdError:
    """starlark-rust places some parse errors at the end of input (an unclosed bracket) at 1:1;
    Python's parser, whose grammar Starlark's is a subset of, finds the unclosed bracket."""
    if not isinstance(error, BuildFileError) or (error.line, error.column) != (1, 1):
        return error
    if "syntax error" not in error.message.lower() and "parse error" not in error.message.lower():
        return error
    try:
        compile(source, error.file or "build.envd", "exec", dont_inherit=True)
    except SyntaxError as exc:
        if exc.lineno:
            lines = source.splitlines()
            column = exc.offset or 1
            shown = lines[exc.lineno - 1] if exc.lineno <= len(lines) else ""
            excerpt = f"{exc.lineno} | {shown}\n  | {' ' * (column - 1)}^"
            return BuildFileError(
                f"{exc.msg} (Starlark: {error.message.split(': ', 1)[-1]})"
                if exc.msg else error.message,
                file=error.file, line=exc.lineno, column=column, excerpt=excerpt,
                hint=error.hint,
            )
    except (ValueError, RecursionError):
        pass
    return error


def check_syntax_line(source: str, name: str) -> None:
    """Upstream: a first line with ``# syntax=v0`` is fatal; ``v1`` or nothing is accepted."""
    first = source.split("\n", 1)[0]
    if "# syntax=v0" in first:
        raise BuildFileError(
            "`# syntax=v0` build files are not supported; port the file to v1 and change the "
            "first line to `# syntax=v1`",
            file=name, line=1,
        )


def _read(path: Path, name: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BuildFileNotFoundError(f"build file `{path}` does not exist") from None
    except UnicodeDecodeError as exc:
        raise BuildFileError(f"is not UTF-8 text ({exc.reason})", file=name) from None
    except OSError as exc:
        raise BuildFileError(f"cannot be read: {exc.strerror}", file=name) from None


def _error_line(text: str) -> str:
    for line in text.splitlines():
        if line.startswith("error: "):
            msg = line[len("error: "):]
            msg = msg.replace("Parse error: ", "syntax error: ")
            return _PY_EXC_RE.sub("", msg)
    return text.strip().splitlines()[-1] if text.strip() else "evaluation failed"


def _quote_list(names: list[str], prefix: str = "") -> str:
    return " or ".join(f"`{prefix}{n}`" for n in names)


def evaluate(
    path: Path,
    *,
    context_dir: Path,
    function: str = DEFAULT_FUNCTION,
    extra_functions: Mapping[str, Callable[..., Any]] | None = None,
    user_config: Path | None = None,
    timeout: float | None = None,
    check_buildable: bool = True,
    limits: EvalLimits | None = None,
) -> BuildGraph:
    """Evaluate the build file ``path`` and call ``function``; return the filled graph.

    ``extra_functions`` maps dotted names to vendor callables: ``"install.tensorrt"`` adds a
    function to a module (a new module name creates that module), ``"mycorp_setup"`` adds a
    universe function. Each receives the graph first, then the script's arguments (checked
    against the callable's annotations). ``user_config`` (upstream's
    ``~/.config/envd/config.envd``) is evaluated first, into the same graph.
    ``check_buildable`` refuses, at their position, the calls :data:`UNBUILDABLE` names;
    pass False to only build the graph (comparisons with upstream, graph tests).
    ``limits`` bound the evaluation (default: :func:`limits_in_force`); ``timeout`` overrides
    their wall time. Raises :class:`BuildFileError` subclasses for every problem in the files,
    a limit hit included.
    """
    graph, _ = evaluate_recorded(
        path, context_dir=context_dir, function=function, extra_functions=extra_functions,
        user_config=user_config, timeout=timeout, check_buildable=check_buildable,
        limits=limits, record=False,
    )
    return graph


def evaluate_recorded(
    path: Path,
    *,
    context_dir: Path,
    function: str = DEFAULT_FUNCTION,
    extra_functions: Mapping[str, Callable[..., Any]] | None = None,
    user_config: Path | None = None,
    timeout: float | None = None,
    check_buildable: bool = True,
    limits: EvalLimits | None = None,
    record: bool = True,
) -> tuple[BuildGraph, Reads | None]:
    """:func:`evaluate`, also returning what the evaluation read (:mod:`.reads`) when
    ``record`` is set and the evaluation runs in a forked child; ``None`` otherwise (an
    in-process evaluation is never recorded: recording patches ``os`` for good)."""
    limits = limits or limits_in_force()
    if timeout is not None:
        limits = attrs.evolve(limits, time=timeout)
    import starlark  # noqa: F401  # imported once here, not again in every forked child

    from envd_core.envdfile.lang.isolate import run_limited, should_fork

    def run() -> BuildGraph:
        return _evaluate(path, context_dir, function, extra_functions, user_config,
                         check_buildable, limits)

    if not (record and should_fork(limits)):
        return run_limited(run, limits, Path(path).name), None
    from envd_core.envdfile.lang.reads import record as recording

    return run_limited(lambda: recording(run), limits, Path(path).name)


def _evaluate(
    path: Path,
    context_dir: Path,
    function: str,
    extra_functions: Mapping[str, Callable[..., Any]] | None,
    user_config: Path | None,
    check_buildable: bool,
    limits: EvalLimits,
) -> BuildGraph:
    guard = Guard(limits)
    graph = BuildGraph()
    path = Path(path).absolute()
    roots = [Path(context_dir).absolute()]
    if path.parent.resolve() not in [r.resolve() for r in roots]:
        roots.append(path.parent)
    ev = _Evaluator(graph, roots, extra_functions or {}, guard, check_buildable)
    if user_config is not None and Path(user_config).is_file():
        config_ev = _Evaluator(graph, [Path(user_config).parent], extra_functions or {}, guard,
                               check_buildable)
        config_ev.eval_file(Path(user_config))
    if not path.is_file():  # lengths of --path/--from were checked by the caller
        raise BuildFileNotFoundError(
            f"build file `{path}` does not exist; create it or point --path/--from at it"
        )
    frozen = ev.eval_file(path)
    ev.call(frozen, path.resolve(), function or DEFAULT_FUNCTION)
    dedupe_graph(graph)
    return graph


def dedupe_graph(graph: BuildGraph) -> None:
    """Drop repeated apt packages and data sources, first occurrence kept, in linear time.

    Done once after evaluation rather than per call (``pkg not in list`` made 40,000 packages
    take 18 s and 300,000 never finish); it also covers what vendor functions append.
    """
    graph.apt_packages[:] = dict.fromkeys(graph.apt_packages)
    sources = graph.extensions.get("data_sources")
    if isinstance(sources, list):
        sources[:] = dict.fromkeys(sources)
