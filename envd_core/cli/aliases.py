"""Upstream envd's command aliases (``envd b``, ``envd env ls``, ``envd images rm`` ...).

Upstream v1.3.4 gives most commands short or alternative names; people type them from habit and
scripts carry them, so the same names work here. The tables are plain data, with no click import:
the fast path (:mod:`envd_core.cli.fast`) and the resident's allowlist
(:mod:`envd_core.resident.client`) resolve them too, so an alias starts as fast as the name it
stands for. The click side is :class:`envd_core.cli.app.AliasGroup`.
"""

from __future__ import annotations

#: Top-level aliases -> command (upstream: build `b`, up `u`, run `c`, destroy `down`/`d`,
#: envs `env`/`e`, images `image`, init `i`, new `n`, pause `p`, resume `r`, version `v`).
#: Upstream's command is `destroy`; ours is `down` (what people type, and docker compose's).
TOP: dict[str, str] = {
    "destroy": "down",
    "b": "build",
    "u": "up",
    "c": "run",
    "d": "down",
    "env": "envs",
    "e": "envs",
    "image": "images",
    "i": "init",
    "n": "new",
    "p": "pause",
    "r": "resume",
    "v": "version",
}

#: ``envd envs`` (upstream: list `ls`/`l`, describe `d`).
ENVS: dict[str, str] = {"list": "ls", "l": "ls", "d": "describe"}

#: ``envd images`` (upstream: list `ls`/`l`, describe `d`, remove `r`/`rm`).
IMAGES: dict[str, str] = {"list": "ls", "l": "ls", "d": "describe", "r": "remove", "rm": "remove"}

#: ``envd debug`` (upstream: llb `b`).
DEBUG: dict[str, str] = {"b": "llb"}

#: Group name -> its aliases, for a command line's second word.
GROUPS: dict[str, dict[str, str]] = {"envs": ENVS, "images": IMAGES, "debug": DEBUG}


def canonical(words: list[str] | tuple[str, ...]) -> list[str]:
    """``words`` (a command line's leading command words) with aliases replaced by the names
    they stand for: ``["e", "l"]`` -> ``["envs", "ls"]``. Other words are kept as they are."""
    out = list(words)
    if out:
        out[0] = TOP.get(out[0], out[0])
        sub = GROUPS.get(out[0])
        if sub is not None and len(out) > 1:
            out[1] = sub.get(out[1], out[1])
    return out
