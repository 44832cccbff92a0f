"""A small LLB graph API with deterministic digests.

States are immutable values: every method returns a new ``State``. ``State.to_definition()``
serializes the graph dependencies-first (each op with ``deterministic=True``, digest = sha256 of
those exact bytes, as the daemon computes it) and appends the terminal op that only names the
result. Example::

    base = image("127.0.0.1:5000/busybox:latest")
    out = base.run("echo hi > /hello", name="say hi").root().mkdir("/data")
    definition = out.to_definition()
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from envd_core.errors import ValidationError

if TYPE_CHECKING:
    from envd_core.buildkit._pb import ops_pb2

NET_MODES = {"sandbox": 0, "host": 1, "none": 2}
SECURITY_MODES = {"sandbox": 0, "insecure": 1}
SHARING = {"shared": 0, "private": 1, "locked": 2}
UNSET_TIME = -1  # FileOp timestamps: -1 = "now"; 0 would mean the Unix epoch


def _pb() -> Any:
    from envd_core.buildkit._pb import ops_pb2

    return ops_pb2


def parse_platform(text: str) -> ops_pb2.Platform:
    """``os/arch[/variant]`` -> ``pb.Platform``."""
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise ValidationError(
            f"invalid platform `{text}`: use `os/arch[/variant]`, e.g. `linux/amd64`"
        )
    p = _pb().Platform(OS=parts[0], Architecture=parts[1])
    if len(parts) == 3:
        p.Variant = parts[2]
    return p


def normalize_image_ref(ref: str) -> str:
    """Docker's reference normalization: ``busybox`` -> ``docker.io/library/busybox:latest``."""
    if not ref or ref != ref.strip() or " " in ref:
        raise ValidationError(f"invalid image reference `{ref}`: expected e.g. `debian:bookworm`")
    name, at, digest = ref.partition("@")
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        domain, path = first, rest
    else:
        domain, path = "docker.io", name
        if "/" not in path:
            path = "library/" + path
    last = path.rsplit("/", 1)[-1]
    if ":" not in last and not at:
        path += ":latest"
    repo = path.rsplit(":", 1)[0] if ":" in last else path
    if repo != repo.lower():
        raise ValidationError(
            f"invalid image reference `{ref}`: repository names must be lowercase"
        )
    return f"{domain}/{path}" + (f"@{digest}" if at else "")


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
        md = _pb().OpMetadata(ignore_cache=self.ignore_cache)
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


@dataclass(frozen=True)
class State:
    """An immutable build state: a graph output (None = scratch) plus exec metadata."""

    output: Output | None = None
    env: tuple[tuple[str, str], ...] = ()
    cwd: str = "/"
    user: str = ""
    platform: str | None = None

    # -- metadata
    def with_env(self, key: str, value: str) -> State:
        """Set an environment variable for later ``run`` calls."""
        env = tuple((k, v) for k, v in self.env if k != key) + ((key, value),)
        return _replace(self, env=env)

    def get_env(self, key: str) -> str | None:
        return dict(self.env).get(key)

    def with_cwd(self, path: str) -> State:
        """Set the working directory (relative paths join the current one)."""
        return _replace(self, cwd=posixpath.normpath(posixpath.join(self.cwd, path)))

    def with_user(self, user: str) -> State:
        return _replace(self, user=user)

    def with_platform(self, platform: str) -> State:
        parse_platform(platform)
        return _replace(self, platform=platform)

    def _at(self, output: Output) -> State:
        return _replace(self, output=output)

    def _abs(self, path: str) -> str:
        return posixpath.normpath(posixpath.join(self.cwd, path))

    # -- exec
    def run(
        self,
        args: str | Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        cwd: str | None = None,
        user: str | None = None,
        network: str = "sandbox",
        security: str = "sandbox",
        mounts: Sequence[MountSpec] = (),
        name: str | None = None,
        ignore_cache: bool = False,
        hostname: str | None = None,
    ) -> ExecState:
        """Run a command on this state; a string runs through ``/bin/sh -c``."""
        argv = ["/bin/sh", "-c", args] if isinstance(args, str) else list(args)
        if not argv:
            raise ValidationError("cannot run an empty command: give `args` a program to execute")
        if network not in NET_MODES:
            raise ValidationError(
                f"invalid network mode `{network}`: use one of {sorted(NET_MODES)}"
            )
        if security not in SECURITY_MODES:
            raise ValidationError(
                f"invalid security mode `{security}`: use one of {sorted(SECURITY_MODES)}"
            )
        st = self
        for k, v in (env or {}).items():
            st = st.with_env(k, v)
        if cwd is not None:
            st = st.with_cwd(cwd)
        if user is not None:
            st = st.with_user(user)
        vtx = _ExecVertex(
            st,
            argv,
            list(mounts),
            network=network,
            security=security,
            name=name,
            ignore_cache=ignore_cache,
            hostname=hostname,
        )
        return ExecState(
            output=Output(vtx, 0), env=st.env, cwd=st.cwd, user=st.user, platform=st.platform
        )

    # -- file ops
    def file(self, *actions: FileAction, name: str | None = None) -> State:
        """Apply file actions in order, in one FileOp (each works on the previous result)."""
        if not actions:
            raise ValidationError("a file operation needs at least one action")
        return self._at(Output(_FileVertex(self, list(actions), name=name), 0))

    def mkfile(self, path: str, data: bytes | str, mode: int = 0o644, **kw: Any) -> State:
        return self.file(mkfile(path, data, mode, **kw))

    def mkdir(self, path: str, mode: int = 0o755, parents: bool = True, **kw: Any) -> State:
        return self.file(mkdir(path, mode, parents, **kw))

    def rm(self, path: str, allow_not_found: bool = False, allow_wildcard: bool = False) -> State:
        return self.file(rm(path, allow_not_found, allow_wildcard))

    def copy(self, source: State, src: str, dest: str, **kw: Any) -> State:
        """Copy ``src`` from ``source`` to ``dest`` in this state."""
        return self.file(copy(source, src, dest, **kw))

    # -- serialization
    def to_definition(self, platform: str | None = None) -> ops_pb2.Definition:
        """Serialize the graph ending at this state into a ``pb.Definition``."""
        if self.output is None:
            raise ValidationError(
                "cannot build an empty (scratch) state: BuildKit has no way to express it; "
                "add a file or start from an image"
            )
        return _marshal(self.output, platform or self.platform)

    def digest(self, platform: str | None = None) -> str:
        """The digest of the op producing this state (after ``to_definition``'s rules)."""
        d = self.to_definition(platform)
        return str(_pb().Op.FromString(getattr(d, "def")[-1]).inputs[0].digest)


def _replace(st: State, **kw: Any) -> State:
    values = {f: getattr(st, f) for f in ("output", "env", "cwd", "user", "platform")}
    values.update(kw)
    return State(**values)


class ExecState(State):
    """The root filesystem after an exec, plus access to its writable mounts."""

    def root(self) -> State:
        return State(
            output=self.output, env=self.env, cwd=self.cwd, user=self.user, platform=self.platform
        )

    def get_mount(self, dest: str) -> State:
        """The state of the writable bind mount at ``dest`` after the command ran."""
        assert self.output is not None
        vtx = self.output.vertex
        assert isinstance(vtx, _ExecVertex)
        for m, out in vtx.mount_outputs():
            if m.dest == posixpath.normpath(dest) and out >= 0:
                return State(
                    output=Output(vtx, out),
                    env=self.env,
                    cwd=self.cwd,
                    user=self.user,
                    platform=self.platform,
                )
        raise ValidationError(
            f"no writable bind mount at `{dest}`: only writable bind mounts produce outputs"
        )


def scratch() -> State:
    """The empty filesystem."""
    return State()


def image(
    ref: str, resolve_mode: str | None = None, platform: str | None = None, name: str | None = None
) -> State:
    """A ``docker-image://`` source. ``resolve_mode``: default / pull / local."""
    if resolve_mode not in (None, "default", "pull", "local"):
        raise ValidationError(f"invalid resolve mode `{resolve_mode}`: use default, pull or local")
    attrs = {"image.resolvemode": resolve_mode} if resolve_mode else {}
    vtx = _SourceVertex(
        f"docker-image://{normalize_image_ref(ref)}", attrs, platform_ok=True, name=name
    )
    if platform:
        parse_platform(platform)
        vtx.platform = platform
    return State(output=Output(vtx, 0), platform=platform)


def local(
    name: str,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    follow_paths: Iterable[str] = (),
    shared_key_hint: str | None = None,
    session_id: str | None = None,
    unique: str | None = None,
) -> State:
    """A ``local://NAME`` source, fetched from the client session's FileSync."""
    if not name:
        raise ValidationError("a local source needs a non-empty name")
    attrs: dict[str, str] = {}
    for key, values in (
        ("local.includepattern", include),
        ("local.excludepatterns", exclude),
        ("local.followpaths", follow_paths),
    ):
        v = list(values)
        if v:
            attrs[key] = json.dumps(v)
    if shared_key_hint:
        attrs["local.sharedkeyhint"] = shared_key_hint
    if session_id:
        attrs["local.session"] = session_id
    if unique:
        attrs["local.unique"] = unique
    return State(output=Output(_SourceVertex(f"local://{name}", attrs, platform_ok=False), 0))


def source(
    identifier: str, attrs: Mapping[str, str] | None = None, *, name: str | None = None
) -> State:
    """Any other source op, e.g. ``oci-layout://``; attrs per BuildKit's ``solver/pb/attr.go``."""
    if "://" not in identifier:
        raise ValidationError(f"invalid source identifier `{identifier}`: expected `scheme://...`")
    return State(
        output=Output(_SourceVertex(identifier, attrs or {}, platform_ok=False, name=name), 0)
    )


def http(
    url: str,
    *,
    filename: str | None = None,
    checksum: str | None = None,
    perm: int | None = None,
    uid: int | None = None,
    gid: int | None = None,
    name: str | None = None,
) -> State:
    """An ``http(s)://`` source: one downloaded file (named ``filename``) at the root."""
    if not url.startswith(("http://", "https://")):
        raise ValidationError(f"invalid URL `{url}`: an http source needs http:// or https://")
    attrs: dict[str, str] = {}
    if filename:
        attrs["http.filename"] = filename
    if checksum:
        attrs["http.checksum"] = checksum
    if perm is not None:
        attrs["http.perm"] = f"0{perm:o}"
    if uid is not None:
        attrs["http.uid"] = str(uid)
    if gid is not None:
        attrs["http.gid"] = str(gid)
    return source(url, attrs, name=name)


def git(
    remote: str, ref: str | None = None, *, keep_git_dir: bool = False, name: str | None = None
) -> State:
    """A ``git://`` source: ``remote`` like ``https://github.com/o/r.git``, ``ref`` a branch/tag."""
    bare = remote.split("://", 1)[-1]
    bare = bare.removesuffix(".git")
    ident = f"git://{bare}" + (f"#{ref}" if ref else "")
    attrs = {"git.fullurl": remote}
    if keep_git_dir:
        attrs["git.keepgitdir"] = "true"
    return source(ident, attrs, name=name)


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
        pb = _pb()
        ex = op.exec
        ex.meta.args.extend(self.argv)
        ex.meta.env.extend(self.meta_env)
        ex.meta.cwd = self.cwd
        ex.meta.user = self.user
        if self.hostname:
            ex.meta.hostname = self.hostname
        ex.network = NET_MODES[self.network]
        ex.security = SECURITY_MODES[self.security]
        ex.mounts.append(pb.Mount(input=self.root_input, dest="/", output=0))
        types = {
            "bind": pb.BIND,
            "cache": pb.CACHE,
            "secret": pb.SECRET,
            "ssh": pb.SSH,
            "tmpfs": pb.TMPFS,
        }
        for (m, out), inp in zip(self.mount_outputs(), self.mount_inputs):
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
                pm.cacheOpt.sharing = SHARING[m.sharing]
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
    """One action of a FileOp; build with :func:`mkfile`, :func:`mkdir`, :func:`rm`, :func:`copy`."""

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
    pb = _pb()

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
        pb = _pb()
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


def merge(states: Sequence[State]) -> State:
    """Layer ``states`` on top of each other (needs BuildKit >= 0.10; not dockerd 20.10)."""
    outs = [s.output for s in states if s.output is not None]
    if not outs:
        return scratch()
    if len(outs) == 1:
        return states[0]
    return State(output=Output(_MergeVertex(outs), 0))


def diff(lower: State, upper: State) -> State:
    """The changes from ``lower`` to ``upper`` (needs BuildKit >= 0.10)."""
    return State(
        output=Output(_DiffVertex(lower, upper), 0), env=upper.env, cwd=upper.cwd, user=upper.user
    )


# ----------------------------------------------------------------------------- marshal


def _marshal(result: Output, platform: str | None) -> ops_pb2.Definition:
    pb = _pb()
    default_platform = parse_platform(platform) if platform else None
    digests: dict[int, str] = {}
    seen: set[str] = set()
    definition = pb.Definition()

    def visit(vtx: Vertex) -> str:
        key = id(vtx)
        if key in digests:
            return digests[key]
        op = pb.Op()
        for inp in vtx.inputs:
            op.inputs.add(digest=visit(inp.vertex), index=inp.index)
        vtx.fill(op)
        if vtx.platform_ok:
            if vtx.platform:
                op.platform.CopyFrom(parse_platform(vtx.platform))
            elif default_platform is not None:
                op.platform.CopyFrom(default_platform)
        data = op.SerializeToString(deterministic=True)
        dg = "sha256:" + hashlib.sha256(data).hexdigest()
        if dg not in seen:  # identical ops built twice are one vertex
            seen.add(dg)
            getattr(definition, "def").append(data)
            # Every op gets a metadata entry, even an empty one: frontends turn inputs back
            # into LLB with NewDefinitionOp, which rejects a definition without metadata.
            entry = definition.metadata[dg]
            md = vtx.metadata()
            if md is not None:
                entry.CopyFrom(md)
        digests[key] = dg
        return dg

    # Iterative-enough for real graphs; the recursion depth equals the chain length.
    dg = visit(result.vertex)
    terminal = pb.Op()
    terminal.inputs.add(digest=dg, index=result.index)
    data = terminal.SerializeToString(deterministic=True)
    getattr(definition, "def").append(data)
    definition.metadata["sha256:" + hashlib.sha256(data).hexdigest()].SetInParent()
    return definition
