"""``include(git=...)``: a git repository of `.envd` files used as a module (upstream's envdlib).

Upstream envd v1.3.4 clones the repository into ``~/.cache/envd/envdlib/<url with / as _>``,
pulls it on every build, evaluates every ``*.envd`` file in it and returns a module of their
non-underscore globals (a name defined in two files is an error). Ours does the same, plus:

- **Pinning** (ours only): ``include(git="URL", ref="v1.2")`` takes a tag, branch or commit.
  A full commit id or a tag already fetched is used offline; a branch (or no ref: the remote's
  default branch, as upstream) is fetched on every evaluation. When that fetch fails and a copy
  is cached, the cached copy is used with a warning (upstream ignores the failed pull too).
- **Caching**: one bare repository per URL plus one read-only checkout per commit under
  ``$ENVD_INCLUDE_CACHE`` (default ``$XDG_CACHE_HOME/envd/envdlib``, else
  ``~/.cache/envd/envdlib``). A checkout is written to a temporary directory and renamed, so a
  killed build never leaves half a checkout behind.
- **Errors** are one line: unreachable repository, missing ref, and errors inside an included
  file carry that file's ``path:line:col`` (the path of its checkout in the cache).

How it plugs into the evaluator: Starlark built-ins implemented in Python cannot return Starlark
functions, so ``NAME = include(...)`` at the top level of a file is rewritten, on the same line,
into ``load("@envd-include:N", NAME="__module__")``. The loader answers that id with a small
generated module that loads every ``.envd`` file of the checkout and bundles their globals into
``struct(...)`` (:func:`module_source`). Any other use of ``include`` reaches the built-in, which
says how to write it. The git work runs the ``git`` command-line client: no Python package here
speaks the git wire protocols as completely (dumb/smart HTTP, ``git://``, SSH with the user's
keys and credential helpers).
"""

from __future__ import annotations

import ast
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import attrs

from envd_core.envdfile.errors import BuildArgumentError

log = logging.getLogger(__name__)

#: Module ids the loader answers with a generated module (see the module docstring).
INCLUDE_PREFIX = "@envd-include:"
#: Module ids of the files inside a checkout (absolute path after the prefix).
FILE_PREFIX = "@envd-include-file:"
MODULE_SYMBOL = "envd_include_module"
GIT_TIMEOUT = 120.0
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@attrs.frozen
class IncludeSpec:
    """One ``include(git=URL, ref=REF)`` call found in a file."""

    url: str
    ref: str = ""
    line: int = 0
    column: int = 0


def cache_root() -> Path:
    """Where included repositories are cached (see the module docstring)."""
    override = os.environ.get("ENVD_INCLUDE_CACHE")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg) if xdg else Path.home() / ".cache"
    return base / "envd" / "envdlib"


# ------------------------------------------------------------------ source rewriting
def rewrite_includes(source: str) -> tuple[str, list[IncludeSpec]]:
    """Rewrite top-level ``NAME = include(...)`` statements into aliased ``load()`` calls.

    Line numbers and the statement's start column are kept, so every other position in the
    file is unchanged. Sources Python cannot parse are returned as they are (the interpreter
    reports their syntax error); ``include`` calls left in place reach the built-in.
    """
    if "include" not in source:
        return source, []
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source, []
    lines = source.split("\n")
    specs: list[IncludeSpec] = []
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and isinstance(node.value, ast.Call)
                and isinstance(node.value.func, ast.Name) and node.value.func.id == "include"):
            continue
        spec = _spec(node.value, node.lineno, node.col_offset + 1)
        if spec is None or node.end_lineno is None:
            continue
        name = node.targets[0].id
        first, last = node.lineno - 1, node.end_lineno - 1
        head = lines[first][: node.col_offset]
        tail = lines[last][node.end_col_offset or 0:]
        stmt = f'load("{INCLUDE_PREFIX}{len(specs)}", {name}="{MODULE_SYMBOL}")'
        lines[first] = head + stmt + tail
        for i in range(first + 1, last + 1):
            lines[i] = ""  # keep the line count: later positions stay right
        specs.append(spec)
    return "\n".join(lines), specs


def _spec(call: ast.Call, line: int, column: int) -> IncludeSpec | None:
    """The URL and ref of an ``include(...)`` call with literal string arguments, else None."""
    values: dict[str, str] = {}
    if len(call.args) > 1:
        return None
    if call.args:
        if not (isinstance(call.args[0], ast.Constant) and isinstance(call.args[0].value, str)):
            return None
        values["git"] = call.args[0].value
    for kw in call.keywords:
        if kw.arg not in ("git", "ref") or kw.arg in values:
            return None  # the built-in reports the bad argument with its position
        if not (isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str)):
            return None
        values[kw.arg] = kw.value.value
    if not values.get("git"):
        return None
    return IncludeSpec(url=values["git"], ref=values.get("ref", ""), line=line, column=column)


# ------------------------------------------------------------------ fetching
def _git(args: list[str], *, extra_env: dict[str, str] | None = None) -> str:
    # never prompt for credentials: a build must fail in one line, not hang on a prompt
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true", "LC_ALL": "C",
           **(extra_env or {})}
    proc = subprocess.run(["git", *args], env=env, capture_output=True, text=True,
                          timeout=GIT_TIMEOUT, check=False)
    if proc.returncode != 0:
        raise _GitFailed(_last_line(proc.stderr) or f"git {args[0]} exited {proc.returncode}")
    return proc.stdout


class _GitFailed(Exception):
    pass


def _last_line(text: str) -> str:
    """git's error as one line: its ``fatal:``/``error:`` line and what follows it (git breaks
    "unable to connect to HOST:" and the reason over two lines)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for i, line in enumerate(lines):
        if line.startswith(("fatal:", "error:")):
            return " ".join(lines[i:])[:300]
    return (lines or [""])[-1][:300]


def repo_key(url: str) -> str:
    """Cache folder name of ``url``: upstream's ``/`` → ``_`` made filesystem-safe."""
    return _UNSAFE.sub("_", url.replace("/", "_")).strip("._") or "repo"


def fetch(spec: IncludeSpec, root: Path | None = None) -> Path:
    """The checkout directory of ``spec`` (fetched or cached). Raises BuildArgumentError."""
    if shutil.which("git") is None:
        raise BuildArgumentError(
            f"`include` cannot fetch `{spec.url}`: the `git` command is not installed; "
            "install git (apt-get install git)")
    base = (root or cache_root()) / repo_key(spec.url)
    bare = base / "repo.git"
    what = f"`{spec.url}`" + (f" at `{spec.ref}`" if spec.ref else "")
    try:
        commit = _cached_commit(bare, spec.ref)
        if commit is None:
            fetch_error = _update(bare, spec.url)
            commit = _resolve(bare, spec.ref)
            if fetch_error is not None:
                if commit is None:
                    raise BuildArgumentError(
                        f"`include` cannot fetch {what}: {fetch_error}; check the URL and "
                        "that the git server is reachable")
                log.warning("include: cannot update `%s` (%s); using the cached copy at %s",
                            spec.url, fetch_error, commit[:12])
        if commit is None:
            raise BuildArgumentError(
                f"`include` found no ref `{spec.ref or 'HEAD'}` in `{spec.url}`; give an "
                "existing tag, branch or commit in `ref`")
        return _checkout(bare, base, commit)
    except subprocess.TimeoutExpired:
        raise BuildArgumentError(
            f"`include` timed out after {GIT_TIMEOUT:g}s fetching {what}; check the "
            "network or the URL") from None
    except _GitFailed as exc:
        raise BuildArgumentError(f"`include` cannot use {what}: {exc}") from None


def _cached_commit(bare: Path, ref: str) -> str | None:
    """A commit usable without the network: a pinned commit or a tag already fetched."""
    if not ref or not bare.is_dir():
        return None
    if _COMMIT_RE.match(ref):
        return _resolve(bare, ref)
    try:
        _git(["--git-dir", str(bare), "rev-parse", "--verify", "-q", f"refs/tags/{ref}"])
    except _GitFailed:
        return None
    return _resolve(bare, ref)


def _update(bare: Path, url: str) -> str | None:
    """Clone or fetch the bare mirror; the failure's one-line reason, or None."""
    try:
        if not (bare / "HEAD").is_file():
            bare.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=bare.parent))
            try:
                _git(["clone", "--bare", "--quiet", url, str(tmp / "repo.git")])
                os.replace(tmp / "repo.git", bare)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        else:
            _git(["--git-dir", str(bare), "fetch", "--quiet", "--prune", "--tags", "--force",
                  url, "+refs/heads/*:refs/heads/*"])
    except _GitFailed as exc:
        return str(exc)
    return None


def _resolve(bare: Path, ref: str) -> str | None:
    if not bare.is_dir():
        return None
    try:
        out = _git(["--git-dir", str(bare), "rev-parse", "--verify", "-q",
                    f"{ref or 'HEAD'}^{{commit}}"])
    except _GitFailed:
        return None
    return out.strip() or None


def _checkout(bare: Path, base: Path, commit: str) -> Path:
    """The files of ``commit`` in ``base/<commit>``, written once (temp dir + rename)."""
    target = base / commit
    if target.is_dir():
        return target
    tmp = Path(tempfile.mkdtemp(prefix=".checkout-", dir=base))
    try:
        index = tmp / ".index"
        _git(["--git-dir", str(bare), "--work-tree", str(tmp), "checkout", "-f", commit,
              "--", "."], extra_env={"GIT_INDEX_FILE": str(index)})
        index.unlink(missing_ok=True)
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # a concurrent build renamed its copy first: use that
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ------------------------------------------------------------------ the module
def module_source(checkout: Path, url: str) -> str:
    """Starlark that loads every ``.envd`` file of ``checkout`` and bundles its globals."""
    loads: list[str] = []
    members: list[str] = []
    seen: dict[str, Path] = {}
    for path in sorted(checkout.rglob("*.envd")):
        if ".git" in path.relative_to(checkout).parts or not path.is_file():
            continue
        aliases = []
        names = _globals(path)
        if names is None:
            # Python cannot parse it; loading it makes Starlark report the error at its
            # position (upstream evaluates every file, so a broken one fails the include)
            loads.append(f'load("{FILE_PREFIX}{path}", _unparsed="envd_unparsed")')
            continue
        for name in sorted(names):
            if name.startswith("_"):
                continue
            if name in seen:
                raise BuildArgumentError(
                    f"`include` of `{url}`: `{name}` is defined in both "
                    f"`{seen[name].relative_to(checkout)}` and `{path.relative_to(checkout)}`; "
                    "an included repository must define each name once")
            seen[name] = path
            alias = f"_m{len(members)}"
            aliases.append(f'{alias}="{name}"')
            members.append(f"{name}={alias}")
        if aliases:  # a file without public names adds nothing (Starlark's load needs one)
            loads.append(f'load("{FILE_PREFIX}{path}", {", ".join(aliases)})')
    if not loads:
        raise BuildArgumentError(
            f"`include` of `{url}`: no `.envd` file in the repository defines a public name")
    return "\n".join([*loads, f"{MODULE_SYMBOL} = struct({', '.join(members)})", ""])


def _globals(path: Path) -> set[str] | None:
    """Top-level names a Starlark file defines (``def`` and assignments; loads are local)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (SyntaxError, ValueError, UnicodeDecodeError, OSError):
        return None
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        names.add(sub.id)
    return names
