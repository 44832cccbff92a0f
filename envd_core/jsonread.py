"""``json.loads`` without importing the ``json`` package: the interpreter's C scanner, direct.

The quick commands (``envd context ls/show/use``, ``envd envs ls``) read two or three small
JSON files and nothing else needs ``json`` there; importing the package compiles its regular
expressions and builds its encoder and decoder (1.5-2.5 ms of a ~40 ms command on the project's
VM, ``python -X importtime``). :func:`loads` gives the same values and, on bad input, raises the
same :class:`json.JSONDecodeError` with the same message (the package is imported then, to
build the error). Writers keep using ``json.dumps``.

``_json`` is CPython's accelerator module, present in every build the project supports; an
interpreter without it falls back to ``json.loads``.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

_WHITESPACE = " \t\n\r"
_CONSTANTS = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}


class _Options:
    """What ``json.decoder.JSONDecoder`` hands the C scanner: the defaults of ``json.loads``."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


def _make_scanner() -> Callable[[str, int], tuple[Any, int]] | None:
    try:
        import _json
    except ImportError:  # pragma: no cover - every supported CPython has it
        return None
    # typeshed types the argument as the JSONDecoder it normally is; any object with its
    # attributes is what the C scanner reads
    scanner: Callable[[str, int], tuple[Any, int]] = _json.make_scanner(
        _Options())  # type: ignore[arg-type]
    return scanner


_scan = _make_scanner()


def loads(text: str) -> Any:
    """``json.loads(text)`` for a ``str``."""
    if _scan is None:  # pragma: no cover
        import json

        return json.loads(text)
    if text.startswith("\ufeff"):
        raise _error("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
    start = len(text) - len(text.lstrip(_WHITESPACE))
    try:
        value, end = _scan(text, start)
    except StopIteration as exc:
        raise _error("Expecting value", text, exc.value) from None
    tail = text[end:]
    end += len(tail) - len(tail.lstrip(_WHITESPACE))
    if end != len(text):
        raise _error("Extra data", text, end)
    return value


def _error(message: str, text: str, position: int) -> Exception:
    import json

    return json.JSONDecodeError(message, text, position)
