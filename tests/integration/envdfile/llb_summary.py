"""What of an LLB graph can be compared between upstream envd and ours, offline.

Both sides are reduced to the same :class:`Summary`: the base image (the source at the root of
the chain), apt packages, the Python installer commands, the ordered pip steps with their
arguments, conda commands, ``run()`` commands, copies and the environment build steps see.
Upstream's side comes from ``envd debug llb`` (one JSON op per line, Go field names); ours from
the ``pb.Definition`` the compiler returns. Step *shapes* differ on purpose (our apt step is a
script with cache-friendly settings, upstream's a one-liner), so each field is parsed from the
step's arguments, not compared byte for byte. Julia's unpack and ``Pkg.add`` commands are a
field of their own.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

APT_RE = re.compile(r"apt-get install -y --no-install-recommends((?: [^&\s]+)+)")
OUR_APT_RE = re.compile(r"^pkgs='?([^'\n]*)'?$", re.MULTILINE)
UPSTREAM_RUN_PREFIX = "set -euo pipefail\n"


@dataclass
class Op:
    """One LLB op, reduced to what the summary needs."""

    digest: str
    kind: str  # "exec", "file", "source", "merge", "diff", "" (terminal)
    inputs: list[str]
    args: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    identifier: str = ""
    #: (secondary input digest or "", src, dest) of each copy action
    copies: list[tuple[str, str, str]] = field(default_factory=list)
    name: str = ""


@dataclass
class Summary:
    """The comparable parts of one build."""

    base: str = ""
    apt: list[str] = field(default_factory=list)
    python: list[str] = field(default_factory=list)
    pip: list[list[str]] = field(default_factory=list)
    conda: list[str] = field(default_factory=list)
    run: list[list[str]] = field(default_factory=list)
    julia: list[list[str]] = field(default_factory=list)
    copies: list[tuple[str, str, str]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain data, for messages and JSON."""
        return asdict(self)


def upstream_ops(jsonl: str) -> list[Op]:
    """Parse ``envd debug llb`` output."""
    ops = []
    for line in jsonl.splitlines():
        if not line.strip():
            continue
        d = json.loads(line)
        body = (d.get("Op") or {}).get("Op") or {}
        op = Op(digest=d["Digest"], kind=next(iter(body), ""),
                inputs=[i["digest"] for i in (d.get("Op") or {}).get("inputs") or []],
                name=((d.get("OpMetadata") or {}).get("description") or {}).get(
                    "llb.customname", ""))
        if op.kind == "exec":
            op.args = list(body["exec"]["meta"].get("args") or [])
            op.env = list(body["exec"]["meta"].get("env") or [])
        elif op.kind == "source":
            op.identifier = body["source"]["identifier"]
        elif op.kind == "file":
            for action in body["file"].get("actions") or []:
                copy = (action.get("Action") or {}).get("copy")
                if copy is not None:
                    sec = action.get("secondaryInput", -1)
                    src_digest = op.inputs[sec] if 0 <= sec < len(op.inputs) else ""
                    op.copies.append((src_digest, copy["src"], copy["dest"]))
        ops.append(op)
    return ops


def our_ops(definition: Any) -> list[Op]:
    """Parse our ``pb.Definition``."""
    from envd_core.buildkit._pb import ops_pb2

    ops = []
    for raw in getattr(definition, "def"):
        pb = ops_pb2.Op.FromString(raw)
        kind = pb.WhichOneof("op") or ""
        op = Op(digest="sha256:" + hashlib.sha256(raw).hexdigest(), kind=kind,
                inputs=[i.digest for i in pb.inputs])
        if kind == "exec":
            op.args, op.env = list(pb.exec.meta.args), list(pb.exec.meta.env)
        elif kind == "source":
            op.identifier = pb.source.identifier
        elif kind == "file":
            for action in pb.file.actions:
                if action.WhichOneof("action") == "copy":
                    sec = action.secondaryInput
                    src_digest = op.inputs[sec] if 0 <= sec < len(op.inputs) else ""
                    op.copies.append((src_digest, action.copy.src, action.copy.dest))
        ops.append(op)
    return ops


def chain(ops: list[Op]) -> list[Op]:
    """The ops from the root source to the result, following each op's first input."""
    by_digest = {op.digest: op for op in ops}
    current = ops[-1]
    path = []
    while True:
        path.append(current)
        if not current.inputs:
            break
        current = by_digest[current.inputs[0]]
    return list(reversed(path))


def summarise(ops: list[Op], *, declared_env: list[str], context: Path | None = None) -> Summary:
    """Reduce a build to a :class:`Summary`; ``declared_env`` names the env keys to compare.

    With ``context`` (our side), ``pip install -r FILE`` is written as upstream compiles a
    simple requirements file: its lines inlined into the command (upstream's
    ``IsRequirementsFileSafeToCopyContent``), so equal installs compare equal.
    """
    by_digest = {op.digest: op for op in ops}
    steps = chain(ops)
    out = Summary(base=steps[0].identifier.removeprefix("docker-image://"))
    last_env: list[str] = []
    for op in steps:
        for src_digest, src, dest in op.copies:
            source = by_digest.get(src_digest)
            origin = source.identifier if source and source.kind == "source" else "(built)"
            out.copies.append((origin.removeprefix("docker-image://"), src, dest))
        if op.kind != "exec":
            continue
        last_env = op.env
        text = " ".join(op.args)
        script = op.args[-1] if op.args else ""
        if "apt-get install" in text:
            ours = OUR_APT_RE.search(script)
            theirs = APT_RE.search(script)
            words = ours.group(1).split() if ours else theirs.group(1).split() if theirs else []
            out.apt.extend(w.strip("'") for w in words
                           if not w.startswith("-") and w.strip("'") not in out.apt)
        elif re.search(r"\b(micromamba|conda) (create|shell init|init)\b", text) \
                or "update-alternatives --install /usr/bin/" in text:
            shell = op.args[:2] in (["bash", "-c"], ["sh", "-c"], ["/bin/sh", "-ec"])
            out.python.append(_squash(script) if shell else " ".join(op.args))
        elif op.args[1:4] == ["-m", "pip", "install"]:
            out.pip.append(_inline_requirements(_pip_args(op.args[4:]), context))
        elif re.search(r"\b(conda|micromamba) (install|update|env)\b", text):
            out.conda.append(_squash(text))
        elif op.args[:1] == ["julia"] or "tar zxvf /tmp/julia.tar.gz" in text:
            out.julia.append(list(op.args))
        elif len(op.args) == 5 and op.args[3] == "envd-run":  # ours: RUN_WRAPPER + script
            out.run.append([ln for ln in script.split("\n") if ln])
        elif op.args[:2] == ["bash", "-c"] and script.startswith(UPSTREAM_RUN_PREFIX):
            out.run.append([ln for ln in script[len(UPSTREAM_RUN_PREFIX):].split("\n") if ln])
    env = dict(e.split("=", 1) for e in last_env)
    out.env = {k: env[k] for k in declared_env if k in env}
    return out


def _pip_args(args: list[str]) -> list[str]:
    """pip arguments with our context mount path written as upstream's working-dir path."""
    return [re.sub(r"^/run/envd/context/|^/home/envd/[^/]+/", "", a) for a in args]


def _inline_requirements(args: list[str], context: Path | None) -> list[str]:
    if context is None or len(args) != 2 or args[0] != "-r":
        return args
    lines = (context / args[1]).read_text().splitlines()
    if any(flag in ln for ln in lines for flag in ("-e", "-r", "-c", "--find-links")):
        return args
    return shlex.split(" ".join(ln for ln in lines if not ln.startswith("#")))


def _squash(text: str) -> str:
    return " ".join(shlex.split(text.replace("\n", " "), posix=True)) if text else text
