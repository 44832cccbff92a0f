"""LLB op building blocks: vertices, exec mounts, file actions, merge/diff.

``llb.py`` holds the user-facing ``State`` and re-exports everything public from here; this
module knows states only by their attributes (``output``, ``env``, ``cwd``, ``user``,
``platform``), so it never imports ``llb`` at runtime.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, MutableSequence, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from envd_core.errors import ValidationError

if TYPE_CHECKING:
    from envd_core.buildkit._pb import ops_pb2
    from envd_core.buildkit.llb import State

# User vocabulary -> wire enum number. Plain ints, so importing this module never loads protobuf;
# fill() wraps them in the enum's ValueType (int at runtime) for the typed message fields.
NET_MODES = {"sandbox": 0, "host": 1, "none": 2}
SECURITY_MODES = {"sandbox": 0, "insecure": 1}
SHARING = {"shared": 0, "private": 1, "locked": 2}
UNSET_TIME = -1  # FileOp timestamps: -1 = "now"; 0 would mean the Unix epoch


def definition_ops(definition: ops_pb2.Definition) -> MutableSequence[bytes]:
    """The marshalled ops of ``definition`` (its ``def`` field).

    ``def`` is a Python keyword, so protobuf exposes the field only through ``getattr`` and the
    generated stub cannot declare it; this is the one typed way in.
    """
    ops: MutableSequence[bytes] = getattr(definition, "def")
    return ops


def parse_platform(text: str) -> ops_pb2.Platform:
    """``os/arch[/variant]`` -> ``pb.Platform``."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValidationError(
            f"invalid platform `{text}`: use `os/arch[/variant]`, e.g. `linux/amd64`"
        )
    from envd_core.buildkit._pb import ops_pb2

    p = ops_pb2.Platform(OS=parts[0], Architecture=parts[1])
    if len(parts) == 3:
        p.Variant = parts[2]
    return p


def normalize_image_ref(ref: str) -> str:
    """Docker's reference normalization: ``busybox`` -> ``docker.io/library/busybox:latest``."""
    from envd_core.imageref import parse_reference

    return str(parse_reference(ref).normalized())


# ----------------------------------------------------------------------------- graph core


class Vertex:
    """One op of the graph: its inputs and a builder for the ``pb.Op`` body."""

    def __init__(
        self,
        inputs: Sequence[Output],
        *,
        name: str | None = None,
        ignore_cache: bool = False,
        platform_ok: bool = False,
    ) -> None:
        self.inputs = list(inputs)
        self.name = name
        self.ignore_cache = ignore_cache
        self.platform_ok = platform_ok  # set Op.platform (image sources and exec, like Go)
        self.platform: str | None = None

    def fill(self, op: ops_pb2.Op) -> None:  # pragma: no cover - abstract
        """Required: set the op's oneof body (everything but inputs/platform)."""
        raise NotImplementedError

    def metadata(self) -> ops_pb2.OpMetadata | None:
        if not self.name and not self.ignore_cache:
            return None
        from envd_core.buildkit._pb import ops_pb2

        md = ops_pb2.OpMetadata(ignore_cache=self.ignore_cache)
        if self.name:
            md.description["llb.customname"] = self.name
        return md


@dataclass(frozen=True)
class Output:
    """Output ``index`` of ``vertex``."""

    vertex: Vertex
    index: int = 0


class _SourceVertex(Vertex):
    def __init__(
        self,
        identifier: str,
        attrs: Mapping[str, str],
        *,
        platform_ok: bool,
        name: str | None = None,
    ) -> None:
        super().__init__([], name=name, platform_ok=platform_ok)
        self.identifier = identifier
        self.attrs = dict(attrs)

    def fill(self, op: ops_pb2.Op) -> None:
        op.source.identifier = self.identifier
        op.source.attrs.update(self.attrs)


# ----------------------------------------------------------------------------- exec


@dataclass(frozen=True)
class MountSpec:
    """A mount for ``State.run``; build with :func:`bind`, :func:`cache`, :func:`secret`, ..."""

    dest: str
    kind: str  # bind | cache | secret | ssh | tmpfs
    source: State | None = None
    selector: str = ""
    readonly: bool = False
    id: str = ""
    sharing: str = "shared"
    uid: int = 0
    gid: int = 0
    mode: int = 0
    optional: bool = False
    size: int = 0


def bind(dest: str, source: State, selector: str = "", readonly: bool = False) -> MountSpec:
    return MountSpec(posixpath.normpath(dest), "bind", source, selector, readonly)


def cache(dest: str, id: str, sharing: str = "shared", base: State | None = None) -> MountSpec:
    if sharing not in SHARING:
        raise ValidationError(f"invalid cache sharing `{sharing}`: use one of {sorted(SHARING)}")
    return MountSpec(posixpath.normpath(dest), "cache", base, id=id or dest, sharing=sharing)


def secret(
    dest: str, id: str, uid: int = 0, gid: int = 0, mode: int = 0o400, optional: bool = False
) -> MountSpec:
    return MountSpec(
        posixpath.normpath(dest), "secret", id=id, uid=uid, gid=gid, mode=mode, optional=optional
    )


def ssh(
    dest: str = "/run/buildkit/ssh_agent.0",
    id: str = "default",
    uid: int = 0,
    gid: int = 0,
    mode: int = 0o600,
    optional: bool = False,
) -> MountSpec:
    return MountSpec(
        posixpath.normpath(dest), "ssh", id=id, uid=uid, gid=gid, mode=mode, optional=optional
    )


def tmpfs(dest: str, size: int = 0) -> MountSpec:
    return MountSpec(posixpath.normpath(dest), "tmpfs", size=size)


class _ExecVertex(Vertex):
    def __init__(
        self,
        st: State,
        argv: list[str],
        mounts: list[MountSpec],
        *,
        network: str,
        security: str,
        name: str | None,
        ignore_cache: bool,
        hostname: str | None,
    ) -> None:
        self.root = st.output
        self.meta_env = [f"{k}={v}" for k, v in st.env]
        self.cwd, self.user, self.argv = st.cwd, st.user, argv
        self.mounts = mounts
        self.network, self.security, self.hostname = network, security, hostname
        inputs: list[Output] = []

        def idx(o: Output | None) -> int:
            if o is None:
                return -1
            if o not in inputs:
                inputs.append(o)
            return inputs.index(o)

        self.root_input = idx(self.root)
        self.mount_inputs = [idx(m.source.output if m.source else None) for m in mounts]
        super().__init__(inputs, name=name, ignore_cache=ignore_cache, platform_ok=True)
        if st.platform:
            self.platform = st.platform

    def mount_outputs(self) -> list[tuple[MountSpec, int]]:
        """Output index per extra mount: writable binds get 1, 2, ...; the rest -1."""
        out, n = [], 1
        for m in self.mounts:
            if m.kind == "bind" and not m.readonly:
                out.append((m, n))
                n += 1
            else:
                out.append((m, -1))
        return out

    def fill(self, op: ops_pb2.Op) -> None:
        from envd_core.buildkit._pb import ops_pb2 as pb

        ex = op.exec
        ex.meta.args.extend(self.argv)
        ex.meta.env.extend(self.meta_env)
        ex.meta.cwd = self.cwd
        ex.meta.user = self.user
        if self.hostname:
            ex.meta.hostname = self.hostname
        ex.network = pb.NetMode.ValueType(NET_MODES[self.network])
        ex.security = pb.SecurityMode.ValueType(SECURITY_MODES[self.security])
        ex.mounts.append(pb.Mount(input=self.root_input, dest="/", output=0))
        types = {
            "bind": pb.BIND,
            "cache": pb.CACHE,
            "secret": pb.SECRET,
            "ssh": pb.SSH,
            "tmpfs": pb.TMPFS,
        }
        for (m, out), inp in zip(self.mount_outputs(), self.mount_inputs, strict=True):
            pm = pb.Mount(
                dest=m.dest,
                output=out,
                mountType=types[m.kind],
                selector=m.selector,
                readonly=m.readonly,
            )
            pm.input = inp if m.kind in ("bind", "cache") else -1
            if m.kind == "cache":
                pm.cacheOpt.ID = m.id
                pm.cacheOpt.sharing = pb.CacheSharingOpt.ValueType(SHARING[m.sharing])
            elif m.kind == "secret":
                pm.secretOpt.CopyFrom(
                    pb.SecretOpt(ID=m.id, uid=m.uid, gid=m.gid, mode=m.mode, optional=m.optional)
                )
            elif m.kind == "ssh":
                pm.SSHOpt.CopyFrom(
                    pb.SSHOpt(ID=m.id, uid=m.uid, gid=m.gid, mode=m.mode, optional=m.optional)
                )
            elif m.kind == "tmpfs" and m.size:
                pm.TmpfsOpt.size = m.size
            ex.mounts.append(pm)


# ----------------------------------------------------------------------------- file ops


@dataclass(frozen=True)
class FileAction:
    """One action of a FileOp; build with :func:`mkfile`, :func:`mkdir`, :func:`rm` or :func:`copy`.
    """

    kind: str
    args: Mapping[str, Any] = field(default_factory=dict)
    source: State | None = None  # copy only


def mkfile(
    path: str,
    data: bytes | str,
    mode: int = 0o644,
    *,
    owner: str | int | None = None,
    timestamp_ns: int = UNSET_TIME,
) -> FileAction:
    raw = data.encode() if isinstance(data, str) else bytes(data)
    return FileAction(
        "mkfile",
        {"path": path, "data": raw, "mode": mode, "owner": owner, "timestamp": timestamp_ns},
    )


def mkdir(
    path: str,
    mode: int = 0o755,
    parents: bool = True,
    *,
    owner: str | int | None = None,
    timestamp_ns: int = UNSET_TIME,
) -> FileAction:
    return FileAction(
        "mkdir",
        {
            "path": path,
            "mode": mode,
            "makeParents": parents,
            "owner": owner,
            "timestamp": timestamp_ns,
        },
    )


def rm(path: str, allow_not_found: bool = False, allow_wildcard: bool = False) -> FileAction:
    return FileAction(
        "rm", {"path": path, "allowNotFound": allow_not_found, "allowWildcard": allow_wildcard}
    )


def copy(
    source: State,
    src: str,
    dest: str,
    *,
    follow_symlinks: bool = True,
    dir_contents: bool = True,
    create_dest_path: bool = True,
    allow_wildcard: bool = True,
    allow_empty_wildcard: bool = True,
    mode: int | None = None,
    owner: str | int | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    timestamp_ns: int = UNSET_TIME,
) -> FileAction:
    return FileAction(
        "copy",
        {
            "src": src,
            "dest": dest,
            "followSymlink": follow_symlinks,
            "dirCopyContents": dir_contents,
            "createDestPath": create_dest_path,
            "allowWildcard": allow_wildcard,
            "allowEmptyWildcard": allow_empty_wildcard,
            "mode": -1 if mode is None else mode,
            "owner": owner,
            "include_patterns": list(include),
            "exclude_patterns": list(exclude),
            "timestamp": timestamp_ns,
        },
        source,
    )


def _chown(owner: str | int | None) -> ops_pb2.ChownOpt | None:
    if owner is None:
        return None
    from envd_core.buildkit._pb import ops_pb2 as pb

    def one(v: str) -> Any:
        return (
            pb.UserOpt(byID=int(v))
            if v.isdigit()
            else pb.UserOpt(byName=pb.NamedUserOpt(name=v, input=-1))
        )

    user, _, group = str(owner).partition(":")
    opt = pb.ChownOpt(user=one(user))
    if group:
        opt.group.CopyFrom(one(group))
    return opt


class _FileVertex(Vertex):
    def __init__(self, base: State, actions: list[FileAction], name: str | None) -> None:
        inputs: list[Output] = []
        if base.output is not None:
            inputs.append(base.output)
        self.base_is_scratch = base.output is None
        self.cwd = base.cwd
        self.actions = actions
        self.secondary: list[int] = []
        for a in actions:
            if a.kind == "copy" and a.source is not None and a.source.output is not None:
                if a.source.output not in inputs:
                    inputs.append(a.source.output)
                self.secondary.append(inputs.index(a.source.output))
            else:
                self.secondary.append(-1)
        super().__init__(inputs, name=name)

    def fill(self, op: ops_pb2.Op) -> None:
        from envd_core.buildkit._pb import ops_pb2 as pb

        n_inputs = len(self.inputs)
        for k, a in enumerate(self.actions):
            fa = op.file.actions.add()
            # Action k works on action k-1's result, addressed as len(inputs) + (k-1).
            fa.input = (-1 if self.base_is_scratch else 0) if k == 0 else n_inputs + k - 1
            fa.secondaryInput = self.secondary[k]
            fa.output = 0 if k == len(self.actions) - 1 else -1
            args = dict(a.args)
            owner = _chown(args.pop("owner", None))
            if a.kind == "copy":
                src_cwd = a.source.cwd if a.source is not None else "/"
                args["src"] = posixpath.normpath(posixpath.join(src_cwd, args["src"]))
                args["dest"] = _join_keep_slash(self.cwd, args["dest"])
                body = pb.FileActionCopy(**args)
                target = fa.copy
            else:
                args["path"] = posixpath.normpath(posixpath.join(self.cwd, args["path"]))
                body = {
                    "mkfile": pb.FileActionMkFile,
                    "mkdir": pb.FileActionMkDir,
                    "rm": pb.FileActionRm,
                }[a.kind](**args)
                target = getattr(fa, a.kind)
            if owner is not None:
                body.owner.CopyFrom(owner)
            target.CopyFrom(body)


def _join_keep_slash(cwd: str, dest: str) -> str:
    # A trailing slash on a copy destination means "into this directory"; keep it.
    joined = posixpath.normpath(posixpath.join(cwd, dest))
    return joined + "/" if dest.endswith("/") and joined != "/" else joined


# ----------------------------------------------------------------------------- merge / diff


class _MergeVertex(Vertex):
    def fill(self, op: ops_pb2.Op) -> None:
        for i in range(len(self.inputs)):
            op.merge.inputs.add(input=i)


class _DiffVertex(Vertex):
    def __init__(self, lower: State, upper: State) -> None:
        inputs: list[Output] = []
        self.lo = self.up = -1
        if lower.output is not None:
            inputs.append(lower.output)
            self.lo = 0
        if upper.output is not None:
            if upper.output not in inputs:
                inputs.append(upper.output)
            self.up = inputs.index(upper.output)
        super().__init__(inputs)

    def fill(self, op: ops_pb2.Op) -> None:
        op.diff.lower.input = self.lo
        op.diff.upper.input = self.up
