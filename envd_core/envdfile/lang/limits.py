"""The limits a build file is evaluated under: nesting depth, memory, steps and wall time.

A build file is code from a repository, so evaluating it must end, and end in one line, whatever
it contains. starlark-rust parses and compiles recursively: a file nested a few thousand levels
deep (``[[[…]]]``, ``1+1+1…``, even inside a function never called) overflows the native stack
and the whole process dies of SIGSEGV. Python cannot catch that, so the depth is bounded
*before* parsing by :func:`check_nesting`, a scanner that never recurses, and evaluation runs on
a thread whose stack is sized from the depth limit (:func:`stack_size`): about 4 KiB of native
stack per level was measured, the thread gets 16 KiB per allowed level.

Memory, steps and time are checked in starlark-rust's cancellation checkpoint (reached about
every 1,000 loop iterations or 500 calls) by :class:`Guard`, so a limit hit there is reported at
the statement being evaluated. One statement can allocate gigabytes between two checkpoints
(``[0] * 10**9``); :mod:`envd_core.envdfile.lang.isolate` backs the guard with rlimits in a
forked child.

Limits come from :data:`LIMITS_ENV` (``depth=2000,memory=2GiB,steps=50000,time=300``); a vendor
distribution sets its defaults through ``envd_option_defaults`` under the key ``"build-file"``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping

import attrs

from envd_core.envdfile.errors import BuildFileError
from envd_core.errors import ValidationError

#: Environment variable overriding the limits, ``name=value`` pairs separated by commas.
LIMITS_ENV = "ENVD_BUILD_LIMITS"
#: Bytes of native stack given to the evaluating thread per allowed nesting level.
STACK_PER_LEVEL = 16 * 1024
MIN_STACK = 16 * 1024 * 1024
_UNITS = {"": 1, "b": 1, "k": 1024, "kb": 1000, "kib": 1024, "m": 1024**2, "mb": 1000**2,
          "mib": 1024**2, "g": 1024**3, "gb": 1000**3, "gib": 1024**3}


@attrs.frozen
class EvalLimits:
    """What one evaluation of a build file (with the files it loads) may use.

    The defaults fit a 2-core, 4 GiB laptop: 1 GiB for the evaluation on top of what envd already
    uses, two minutes, 20,000 checkpoints (about 20 million loop iterations) and 1,000 nesting
    levels (real build files nest fewer than 20).
    """

    #: Brackets, operators and blocks nested in one place of the source.
    depth: int = 1000
    #: Bytes the evaluation may allocate beyond what the process used when it started.
    memory: int = 1024**3
    #: Cancellation checkpoints (about 1,000 loop iterations or 500 calls each).
    steps: int = 20_000
    #: Seconds of wall time.
    time: float = 120.0
    #: Evaluate in a forked child with rlimits (Linux); False keeps it in-process on a thread.
    isolate: bool = True

    def replace(self, settings: Mapping[str, str], origin: str) -> EvalLimits:
        """These limits with ``settings`` (``{"memory": "2GiB"}``) applied; ``origin`` names
        where they come from in an error."""
        changes: dict[str, object] = {}
        for key, raw in settings.items():
            name = key.strip().lower()
            value = str(raw).strip()
            try:
                if name == "depth":
                    changes[name] = _positive(int(value))
                elif name == "memory":
                    changes[name] = _positive(parse_size(value))
                elif name == "steps":
                    changes[name] = _positive(int(value))
                elif name == "time":
                    changes[name] = float(_positive(float(value.rstrip("s"))))
                elif name == "isolate":
                    if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                        raise ValueError(value)
                    changes[name] = value.lower() in ("true", "1", "yes")
                else:
                    raise ValidationError(
                        f"{origin}: unknown build-file limit `{key}`; the limits are depth, "
                        "memory, steps, time and isolate"
                    )
            except ValueError:
                raise ValidationError(
                    f"{origin}: build-file limit `{key}` has a bad value `{value}`; give a "
                    "positive number (memory: 512MiB, 2GiB; time: seconds)"
                ) from None
        return attrs.evolve(self, **changes)  # type: ignore[arg-type]

    def stack_size(self) -> int:
        """Native stack for the evaluating thread: enough for :attr:`depth` levels."""
        return max(MIN_STACK, self.depth * STACK_PER_LEVEL)


def _positive(value: float) -> float:
    if value <= 0:
        raise ValueError(value)
    return value


def parse_size(text: str) -> int:
    """``"512MiB"``, ``"2G"``, ``"1000000"`` → bytes."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([a-zA-Z]*)", text.strip())
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(text)
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_settings(text: str, origin: str) -> dict[str, str]:
    """``"depth=2000,memory=2GiB"`` → ``{"depth": "2000", "memory": "2GiB"}``."""
    settings: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise ValidationError(
                f"{origin}: `{part.strip()}` is not name=value, e.g. `depth=2000,memory=2GiB`"
            )
        settings[key.strip()] = value.strip()
    return settings


def limits_in_force(vendor: Mapping[str, str] | None = None) -> EvalLimits:
    """The defaults, then a distribution's ``"build-file"`` defaults, then :data:`LIMITS_ENV`."""
    limits = EvalLimits()
    if vendor:
        limits = limits.replace(vendor, "the distribution's build-file limits")
    text = os.environ.get(LIMITS_ENV, "")
    if text.strip():
        limits = limits.replace(parse_settings(text, LIMITS_ENV), LIMITS_ENV)
    return limits


# ----------------------------------------------------------------------------- nesting
#: Words that nest an expression one level deeper (binary/unary operators, conditionals).
_NESTING_WORDS = frozenset({"and", "or", "not", "in", "if", "else", "lambda", "for"})
_OPERATOR_CHARS = frozenset("+-*/%&|^<>=!~.")
_WORD_RE = re.compile(r"[A-Za-z_][A-Za-z_0-9]*")
_STRING_PREFIX_RE = re.compile(r"(?i)(?:rb|br|r|b)?(?P<q>'''|\"\"\"|'|\")")


def check_nesting(source: str, file: str, limit: int) -> int:
    """Raise :class:`BuildFileError` at the first place ``source`` nests deeper than ``limit``.

    The estimate is an upper bound of the parser's recursion: each open bracket, each operator
    (binary, unary, ``.``, a call or index after an operand, ``if``/``else``, ``and``/``or``)
    of the element being written at every open bracket level, and each indented block. Commas,
    ``=`` and ``:`` start a new element; a new line outside brackets a new statement. Runs in
    linear time and never recurses. Returns the deepest level seen.
    """
    ops: list[int] = [0]  # operators in the current element, per open bracket level
    total_ops = 0  # sum(ops), kept incrementally so each step is O(1)
    indents: list[int] = [0]
    deepest = 0
    i, n = 0, len(source)
    line, line_start = 1, 0
    after_operand = False
    at_line_start = True

    def fail(at: int) -> None:
        raise BuildFileError(
            f"nesting is deeper than the limit of {limit} levels (brackets, operators and "
            "blocks nested in one expression); flatten the expression into several statements",
            file=file, line=line, column=at - line_start + 1,
            hint=f"a vendor or user can raise the limit with {LIMITS_ENV}=depth=N",
        )

    while i < n:
        c = source[i]
        if at_line_start and len(ops) == 1:
            j = i
            while j < n and source[j] in " \t":
                j += 1
            if j < n and source[j] not in "#\r\n":
                width = j - i
                while len(indents) > 1 and width < indents[-1]:
                    indents.pop()
                if width > indents[-1]:
                    indents.append(width)
            at_line_start = False
            i = j
            continue
        if c == "\n":
            line += 1
            line_start = i + 1
            i += 1
            if len(ops) == 1:
                total_ops -= ops[0]
                ops[0] = 0
                at_line_start = True
                after_operand = False
            continue
        if c in " \t\r\\":
            i += 1
            continue
        if c == "#":
            end = source.find("\n", i)
            i = n if end < 0 else end
            continue
        string = _STRING_PREFIX_RE.match(source, i)
        if string:
            i, line, line_start = _skip_string(source, string.end(), string.group("q"),
                                               line, line_start)
            after_operand = True
            continue
        word = _WORD_RE.match(source, i)
        if word:
            if word.group(0) in _NESTING_WORDS:
                ops[-1] += 1
                total_ops += 1
                after_operand = False
            else:
                after_operand = True
            i = word.end()
        elif c in "([{":
            if after_operand:  # a call or an index: one more level of the same element
                ops[-1] += 1
                total_ops += 1
            ops.append(0)
            after_operand = False
            i += 1
        elif c in ")]}":
            if len(ops) > 1:
                total_ops -= ops.pop()
            after_operand = True
            i += 1
        elif c in ",;:" or (c == "=" and source[i + 1:i + 2] != "="
                            and (i == 0 or source[i - 1] not in "=!<>")):
            total_ops -= ops[-1]
            ops[-1] = 0
            after_operand = False
            i += 1
        elif c in _OPERATOR_CHARS:
            ops[-1] += 1
            total_ops += 1
            after_operand = False
            i += 1
            while i < n and source[i] in _OPERATOR_CHARS and source[i] not in "-+~.":
                i += 1  # `**`, `//`, `==`, `<<=` are one operator
        else:
            after_operand = c.isdigit() or after_operand
            i += 1
        depth = len(ops) + total_ops + len(indents) - 1
        if depth > deepest:
            deepest = depth
            if depth > limit:
                fail(i - 1)
    return deepest


def _skip_string(source: str, i: int, quote: str, line: int, line_start: int
                 ) -> tuple[int, int, int]:
    """Index after the string whose body starts at ``i``; line bookkeeping for triple quotes."""
    n = len(source)
    while i < n:
        c = source[i]
        if c == "\\":
            i += 2
            continue
        if c == "\n":
            if len(quote) == 1:  # an unterminated string: the parser reports it
                return i, line, line_start
            line += 1
            line_start = i + 1
        elif source.startswith(quote, i):
            return i + len(quote), line, line_start
        i += 1
    return n, line, line_start


# ----------------------------------------------------------------------------- the guard
class Guard:
    """The cancellation check starlark-rust calls: counts steps, samples memory and time.

    When a limit is hit it records which one in :attr:`exceeded` and returns True, so the
    evaluator stops with its position and :meth:`message` explains the stop.
    """

    def __init__(self, limits: EvalLimits) -> None:
        self.limits = limits
        self.steps = 0
        self.exceeded: str | None = None
        self.deadline = time.monotonic() + limits.time
        self.baseline = resident_bytes()

    def __call__(self) -> bool:
        self.steps += 1
        if self.steps > self.limits.steps:
            self.exceeded = "steps"
        elif time.monotonic() > self.deadline:
            self.exceeded = "time"
        elif resident_bytes() - self.baseline > self.limits.memory:
            self.exceeded = "memory"
        return self.exceeded is not None

    def message(self, what: str | None = None) -> tuple[str, str]:
        """(message, hint) for the limit hit (``what`` overrides :attr:`exceeded`)."""
        return limit_message(what or self.exceeded or "time", self.limits)


def limit_message(what: str, limits: EvalLimits) -> tuple[str, str]:
    """One line naming the limit ``what`` and the setting that raises it."""
    if what == "steps":
        text = (f"evaluation went over the limit of {limits.steps} steps (about "
                f"{limits.steps * 1000:,} loop iterations); look for a loop that runs too long")
    elif what == "memory":
        text = (f"evaluation used more than the memory limit of {format_size(limits.memory)}; "
                "look for a loop that builds a huge list or string")
    else:
        text = (f"evaluation took longer than the limit of {limits.time:g}s and was stopped; "
                "look for an endless loop or recursion")
    value = {"steps": "steps=N", "memory": "memory=SIZE"}.get(what, "time=SECONDS")
    return text, f"raise the limit with {LIMITS_ENV}={value}"


def format_size(size: int) -> str:
    """Bytes for messages: ``1 GiB``, ``512 MiB``."""
    for unit, factor in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= factor:
            value = size / factor
            return f"{value:g} {unit}" if value == int(value) else f"{value:.1f} {unit}"
    return f"{size} B"


def resident_bytes() -> int:
    """This process's resident set size (Linux ``/proc/self/statm``; 0 where unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0
