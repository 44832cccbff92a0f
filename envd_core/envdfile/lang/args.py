"""Binding Starlark call arguments to Python built-ins, with clear type errors.

A built-in is a plain Python function whose first parameter is the graph and whose other
parameters carry type annotations (``str``, ``int``, ``bool``, ``list[str]``, ``dict[str, str]``,
unions with ``None``...). :func:`bind` checks a call against that signature and reports the first
problem as a one-line :class:`BuildArgumentError` naming the function and the argument.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from envd_core.envdfile.errors import BuildArgumentError

_SIMPLE_NAMES: dict[type, str] = {
    str: "a string",
    bool: "a bool",
    int: "an int",
    float: "a number",
    type(None): "None",
}


def describe_type(tp: Any) -> str:
    """Human words for an annotation: ``list[str]`` → ``a list of strings``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return "any value"
    if origin in (types.UnionType, typing.Union):
        parts = [describe_type(a) for a in typing.get_args(tp)]
        return " or ".join(parts)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        inner = describe_type(item)
        plural = {"a string": "strings", "an int": "ints", "a bool": "bools"}.get(inner)
        return f"a list of {plural or inner.removeprefix('a ').removeprefix('an ') + 's'}"
    if origin is dict:
        key, val = typing.get_args(tp) or (Any, Any)
        return f"a dict of {describe_type(key)} to {describe_type(val)}"
    return _SIMPLE_NAMES.get(tp, getattr(tp, "__name__", str(tp)))


def describe_value(value: Any) -> str:
    """The Starlark type name and a short rendering of ``value`` for error messages."""
    kind = {
        str: "string", bool: "bool", int: "int", float: "float", list: "list", tuple: "tuple",
        dict: "dict", type(None): "None",
    }.get(type(value), type(value).__name__)
    # Starlark spelling: strings in double quotes, True/False/None as in Python.
    shown = json.dumps(value) if isinstance(value, str) else repr(value)
    if len(shown) > 40:
        shown = shown[:37] + "..."
    return f"{kind} `{shown}`"


def conforms(value: Any, tp: Any) -> bool:
    """Whether a (Starlark-converted) Python value matches annotation ``tp``."""
    if tp is Any:
        return True
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        return any(conforms(value, a) for a in typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        # Starlark tuples arrive as lists or tuples; both are fine where a list is wanted.
        return isinstance(value, (list, tuple)) and all(conforms(v, item) for v in value)
    if origin is dict:
        key, val = typing.get_args(tp) or (Any, Any)
        return isinstance(value, dict) and all(
            conforms(k, key) and conforms(v, val) for k, v in value.items()
        )
    if tp is type(None) or tp is None:
        return value is None
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(tp, type):
        return isinstance(value, tp)
    return True


def normalise(value: Any) -> Any:
    """Turn tuples into lists, recursively, so the graph only holds JSON-like data."""
    if isinstance(value, (list, tuple)):
        return [normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    return value


def bind(
    name: str,
    func: Callable[..., Any],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    leading: int = 1,
) -> inspect.BoundArguments:
    """Bind a Starlark call to ``func`` (whose first ``leading`` parameters are filled by us).

    Raises :class:`BuildArgumentError` for unknown, missing, duplicated or mistyped arguments.
    """
    sig = inspect.signature(func)
    params = list(sig.parameters.values())
    user_params = params[leading:]
    accepted = ", ".join(p.name for p in user_params if p.kind is not p.VAR_KEYWORD) or "none"
    placeholders = [None] * leading
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params)
    ours = {p.name for p in params[:leading]}
    for key in kwargs:
        if (key not in sig.parameters or key in ours) and not takes_any:
            raise BuildArgumentError(f"`{name}` has no argument `{key}`; it accepts: {accepted}")
    try:
        bound = sig.bind(*placeholders, *args, **kwargs)
    except TypeError as exc:
        text = str(exc)
        if "too many positional" in text:
            positional = [
                p for p in user_params
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
            ]
            raise BuildArgumentError(
                f"`{name}` takes at most {len(positional)} positional argument(s), got "
                f"{len(args)}; it accepts: {accepted}"
            ) from None
        if "missing a required argument" in text:
            missing = text.split("'")[1] if "'" in text else "?"
            raise BuildArgumentError(
                f"`{name}` needs the argument `{missing}`; it accepts: {accepted}"
            ) from None
        if "multiple values" in text:
            dup = text.split("'")[1] if "'" in text else "?"
            raise BuildArgumentError(f"`{name}` got the argument `{dup}` twice") from None
        raise BuildArgumentError(f"`{name}`: {text}") from None
    hints = _hints(func)
    for pname, value in bound.arguments.items():
        if pname in {p.name for p in params[:leading]}:
            continue
        tp = hints.get(pname)
        param = sig.parameters[pname]
        if param.kind is param.VAR_POSITIONAL and tp is not None:
            for v in value:
                _check(name, pname, v, tp)
            continue
        if param.kind is param.VAR_KEYWORD:
            continue
        if tp is not None:
            _check(name, pname, value, tp)
    return bound


def _check(func_name: str, pname: str, value: Any, tp: Any) -> None:
    if not conforms(value, tp):
        raise BuildArgumentError(
            f"`{func_name}` argument `{pname}` must be {describe_type(tp)}, "
            f"got {describe_value(value)}"
        )


_HINT_CACHE: dict[Callable[..., Any], dict[str, Any]] = {}


def _hints(func: Callable[..., Any]) -> dict[str, Any]:
    """Resolved annotations of ``func``; vendor callables without usable hints get none."""
    if func not in _HINT_CACHE:
        try:
            _HINT_CACHE[func] = typing.get_type_hints(func)
        except Exception:  # noqa: BLE001 - a vendor's odd annotations must not break builds
            _HINT_CACHE[func] = {}
    return _HINT_CACHE[func]
