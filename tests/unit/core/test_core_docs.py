"""Meta-tests: the plugin guide's hook reference is generated from the hookspec docstrings,
every hook has a heading there and a test, and the contexts guide covers every command.

Regenerate the reference after changing a hookspec docstring::

    python tests/unit/core/test_core_docs.py --write
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from pathlib import Path

import click

from envd_core import hookspecs

ROOT = Path(__file__).resolve().parents[3]
GUIDE = ROOT / "docs" / "plugin-guide.md"
CONTEXTS = ROOT / "docs" / "contexts.md"
BEGIN = "<!-- hook reference: generated from envd_core/hookspecs.py, do not edit -->"
END = "<!-- end of hook reference -->"


def hook_names() -> list[str]:
    """Every hook, in the order hookspecs.py defines them."""
    found = [
        (func.__code__.co_firstlineno, name)
        for name, func in vars(hookspecs).items()
        if inspect.isfunction(func) and hasattr(func, "envd_spec")
    ]
    return [name for _, name in sorted(found)]


def _inline(line: str) -> str:
    line = re.sub(r":(?:class|func|data|mod|meth):`~?([^`]+)`", r"`\1`", line)
    return line.replace("``", "`")


def _markdown(doc: str) -> str:
    """The docstring's reST as Markdown: ``x`` -> `x`, roles dropped, ``::`` blocks fenced."""
    lines = inspect.cleandoc(doc).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.rstrip().endswith("::"):
            head = line.rstrip()[:-2].rstrip()
            out.append(_inline(head.replace("**Example**", "**Example:**")) if head else "")
            i += 1
            while i < len(lines) and not lines[i].strip():
                i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or lines[i].startswith("    ")):
                block.append(lines[i][4:])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            out += ["", "```python", *block, "```", ""]
            continue
        out.append(_inline(line))
        i += 1
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def render_hook_reference() -> str:
    parts = [BEGIN, ""]
    for name in hook_names():
        func = getattr(hookspecs, name)
        returns = func.__annotations__.get("return", "None")
        parts += [f"### `{name}`", "", "```python", "@hookimpl", f"def {name}() -> {returns}: ...",
                  "```", "", _markdown(func.__doc__ or ""), ""]
    parts.append(END)
    return "\n".join(parts)


def test_guide_hook_reference_is_generated_from_the_hookspecs():
    guide = GUIDE.read_text()
    assert BEGIN in guide and END in guide
    current = guide[guide.index(BEGIN): guide.index(END) + len(END)]
    assert current == render_hook_reference(), (
        "docs/plugin-guide.md is stale: run python tests/unit/core/test_core_docs.py --write")


def test_every_hook_has_a_heading_in_the_guide():
    headings = set(re.findall(r"^### `(envd_\w+)`", GUIDE.read_text(), flags=re.MULTILINE))
    assert headings == set(hook_names())


def test_every_hook_has_a_test():
    tested: set[str] = set()
    for path in Path(__file__).parent.glob("test_*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and node.name.startswith("test_hook_"):
                tested.update(h for h in hook_names() if node.name.startswith(f"test_hook_{h}"))
    assert set(hook_names()) - tested == set(), "write a test named test_hook_<hook>_…"


def test_contexts_guide_covers_every_context_command_and_flag():
    from envd_core.cli.context import context

    text = CONTEXTS.read_text()
    for name, command in context.commands.items():
        assert re.search(rf"^#+ .*`envd context {name}\b", text, flags=re.MULTILINE), name
        for param in command.params:
            if isinstance(param, click.Option):
                assert param.opts[0] in text, f"{name} {param.opts[0]}"


def test_guide_mentions_every_environment_switch():
    text = GUIDE.read_text() + CONTEXTS.read_text()
    for var in ("ENVD_PLUGINS", "ENVD_DISABLE_PLUGINS", "ENVD_TRACE_HOOKS", "ENVD_CONTEXT",
                "ENVD_CONFIG_DIR", "XDG_CONFIG_HOME", "ENVD_CONTEXT_STORE", "ENVD_DEBUG"):
        assert var in text, var


if __name__ == "__main__" and sys.argv[1:] == ["--write"]:
    guide = GUIDE.read_text()
    start, end = guide.index(BEGIN), guide.index(END) + len(END)
    GUIDE.write_text(guide[:start] + render_hook_reference() + guide[end:])
    print(f"rewrote the hook reference in {GUIDE}")
