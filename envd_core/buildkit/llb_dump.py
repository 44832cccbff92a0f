"""Readable forms of a serialized LLB definition, for ``envd debug llb`` (upstream's command).

The two forms upstream's ``envd debug llb`` and ``buildctl debug dump-llb`` print:

* :func:`as_json_lines`: one JSON object per op, in definition order, ``{"Op": ..., "Digest":
  "sha256:...", "OpMetadata": ...}``, the op and its metadata shaped as Go prints them
  (:func:`go_shape`).
* :func:`as_dot`: a Graphviz graph, a node per op labelled by what it does (the image or
  source for a source, the command line for an exec, the actions for a file op) and an edge per
  input, labelled with the mount point when the input is mounted into an exec below ``/``.

Hand-written because no package turns an LLB definition into either form in Python, and
protobuf's JSON mapping is not the shape Go's encoder gives (see :func:`go_shape`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

#: Node shape per op kind (Graphviz), as upstream draws them.
_SHAPES = {"source": "ellipse", "exec": "box", "merge": "invtriangle", "diff": "doublecircle",
           "file": "note"}


def ops(definition_bytes: bytes) -> list[tuple[str, Any, Any]]:
    """``(digest, Op, OpMetadata or None)`` of each op of the definition, in its order."""
    from envd_core.buildkit._pb import ops_pb2
    from envd_core.buildkit.llb_ops import definition_ops

    definition = ops_pb2.Definition.FromString(definition_bytes)
    found = []
    for raw in definition_ops(definition):
        digest = "sha256:" + hashlib.sha256(raw).hexdigest()
        meta = definition.metadata.get(digest)
        found.append((digest, ops_pb2.Op.FromString(raw), meta))
    return found


#: Fields buildkit's hand-written JSON forms (solver/pb/json.go) print even when zero.
_ALWAYS = {"FileAction": ("input", "secondaryInput", "output")}
#: ... and the one name they spell differently from the proto.
_GO_NAMES = {("UserOpt", "byID"): "byId"}


def as_json_lines(definition_bytes: bytes) -> str:
    """One JSON object per op, each on its own line, shaped as buildctl's (:func:`go_shape`)."""
    lines = []
    for digest, op, meta in ops(definition_bytes):
        entry = {"Op": go_shape(op), "Digest": digest,
                 "OpMetadata": go_shape(meta) if meta is not None else None}
        lines.append(json.dumps(entry, separators=(",", ":"), ensure_ascii=False) + "\n")
    return "".join(lines)


def go_shape(message: Any) -> dict[str, Any]:
    """``message`` as Go's ``encoding/json`` prints buildkit's generated structs, which is what
    ``buildctl debug dump-llb`` and upstream print, so scripts written against theirs read ours:
    proto field names, unset fields left out, numbers (64-bit ones too) and enums as numbers,
    bytes as base64, and each oneof nested under its Go field name (``{"Op": {"exec": ...}}``).
    protobuf's own JSON mapping differs on the last three points."""
    descriptor = message.DESCRIPTOR
    present = {field.name: (field, value) for field, value in message.ListFields()}
    for name in _ALWAYS.get(descriptor.name, ()):
        if name not in present:
            field = descriptor.fields_by_name[name]
            present[name] = (field, field.default_value)
    out: dict[str, Any] = {}
    for field, value in sorted(present.values(), key=lambda item: item[0].number):
        shaped = _go_value(field, value)
        name = _GO_NAMES.get((descriptor.name, field.name), field.name)
        oneof = field.containing_oneof
        if oneof is not None and not getattr(oneof, "is_synthetic", False):
            wrapper = out.setdefault(oneof.name[:1].upper() + oneof.name[1:], {})
            if field.message_type is not None or value != field.default_value:
                wrapper[name] = shaped  # a zero scalar is set here, but Go's omitempty drops it
        else:
            out[name] = shaped
    for oneof in descriptor.oneofs:  # Go's wrapper struct is printed even when nothing is set
        if not getattr(oneof, "is_synthetic", False):
            out.setdefault(oneof.name[:1].upper() + oneof.name[1:], {})
    return out


def _go_value(field: Any, value: Any) -> Any:
    if field.message_type is not None and field.message_type.GetOptions().map_entry:
        item = field.message_type.fields_by_name["value"]
        return {key: _go_scalar(item, value[key]) for key in sorted(value)}
    if _repeated(field):
        return [_go_scalar(field, item) for item in value]
    return _go_scalar(field, value)


def _repeated(field: Any) -> bool:
    """``is_repeated`` (protobuf 6+; ``label`` is gone in 7) or the label (5.x)."""
    repeated = getattr(field, "is_repeated", None)
    if repeated is None:
        return bool(field.label == field.LABEL_REPEATED)
    return bool(repeated)


def _go_scalar(field: Any, value: Any) -> Any:
    if field.message_type is not None:
        return go_shape(value)
    if field.type == field.TYPE_BYTES:
        return base64.b64encode(value).decode()
    return value


def as_dot(definition_bytes: bytes) -> str:
    """The definition as a Graphviz ``digraph``."""
    listed = ops(definition_bytes)
    out = ["digraph {\n"]
    for digest, op, _ in listed:
        label, shape = _describe(digest, op)
        out.append(f"  {_quote(digest)} [label={_quote(label)} shape={_quote(shape)}];\n")
    for digest, op, _ in listed:
        kind = op.WhichOneof("op")
        for index, source in enumerate(op.inputs):
            label = ""
            if kind == "exec":
                for mount in op.exec.mounts:
                    if mount.input == index and mount.dest != "/":
                        label = mount.dest
            out.append(f"  {_quote(source.digest)} -> {_quote(digest)} "
                       f"[label={_quote(label)}];\n")
    out.append("}\n")
    return "".join(out)


def _describe(digest: str, op: Any) -> tuple[str, str]:
    kind = op.WhichOneof("op")
    if kind == "source":
        label = op.source.identifier
    elif kind == "exec":
        label = " ".join(op.exec.meta.args)
    elif kind == "file":
        label = ",".join(_file_action(action) for action in op.file.actions)
    elif kind in ("merge", "diff"):
        label = kind
    else:  # the definition's last op: no kind, only the result as its input
        return digest, "plaintext"
    return label, _SHAPES[kind]


def _file_action(action: Any) -> str:
    kind = action.WhichOneof("action")
    if kind == "copy":
        return f"copy{{src={action.copy.src}, dest={action.copy.dest}}}"
    if kind == "symlink":
        return f"symlink{{old={action.symlink.oldpath}, new={action.symlink.newpath}}}"
    if kind in ("mkfile", "mkdir", "rm"):
        return f"{kind}{{path={getattr(action, kind).path}}}"
    return ""


def _quote(text: str) -> str:
    """A double-quoted dot ID (Go's %q, which upstream uses, for the ASCII these are)."""
    return json.dumps(text, ensure_ascii=False)
