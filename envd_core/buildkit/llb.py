"""A small LLB graph API with deterministic digests.

States are immutable values: every method returns a new ``State``. ``State.to_definition()``
serializes the graph dependencies-first (each op with ``deterministic=True``, digest = sha256 of
those exact bytes, as the daemon computes it) and appends the terminal op that only names the
result. Op building blocks (mounts, file actions) live in ``llb_ops`` and are re-exported here.
Example::

    base = image("127.0.0.1:5000/busybox:latest")
    out = base.run("echo hi > /hello", name="say hi").root().mkdir("/data")
    definition = out.to_definition()
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from envd_core.buildkit.llb_ops import (
    NET_MODES,
    SECURITY_MODES,
    SHARING,
    UNSET_TIME,
    FileAction,
    MountSpec,
    Output,
    Vertex,
    _DiffVertex,
    _ExecVertex,
    _FileVertex,
    _MergeVertex,
    _SourceVertex,
    bind,
    cache,
    copy,
    definition_ops,
    mkdir,
    mkfile,
    normalize_image_ref,
    parse_platform,
    rm,
    secret,
    ssh,
    tmpfs,
)
from envd_core.errors import ValidationError

if TYPE_CHECKING:
    from envd_core.buildkit._pb import ops_pb2

__all__ = [
    "NET_MODES",
    "SECURITY_MODES",
    "SHARING",
    "UNSET_TIME",
    "ExecState",
    "FileAction",
    "MountSpec",
    "Output",
    "State",
    "Vertex",
    "bind",
    "cache",
    "copy",
    "definition_ops",
    "diff",
    "git",
    "http",
    "image",
    "local",
    "merge",
    "mkdir",
    "mkfile",
    "normalize_image_ref",
    "parse_platform",
    "rm",
    "scratch",
    "secret",
    "source",
    "ssh",
    "tmpfs",
]


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
        env = (*((k, v) for k, v in self.env if k != key), (key, value))
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
        from envd_core.buildkit._pb import ops_pb2

        return ops_pb2.Op.FromString(definition_ops(d)[-1]).inputs[0].digest


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
    from envd_core.buildkit._pb import ops_pb2 as pb

    default_platform = parse_platform(platform) if platform else None
    digests: dict[int, str] = {}
    seen: set[str] = set()
    definition = pb.Definition()

    def emit(vtx: Vertex) -> str:
        """Serialize ``vtx``, whose inputs all have digests already."""
        op = pb.Op()
        for inp in vtx.inputs:
            op.inputs.add(digest=digests[id(inp.vertex)], index=inp.index)
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
            definition_ops(definition).append(data)
            # Every op gets a metadata entry, even an empty one: frontends turn inputs back
            # into LLB with NewDefinitionOp, which rejects a definition without metadata.
            entry = definition.metadata[dg]
            md = vtx.metadata()
            if md is not None:
                entry.CopyFrom(md)
        return dg

    # Dependencies first, with an explicit stack: a chain of thousands of steps (one `run()`
    # per line of a generated build file) would exceed Python's recursion limit.
    stack: list[tuple[Vertex, bool]] = [(result.vertex, False)]
    while stack:
        vtx, inputs_done = stack.pop()
        if id(vtx) in digests:
            continue
        if inputs_done:
            digests[id(vtx)] = emit(vtx)
            continue
        stack.append((vtx, True))
        # Reversed, so inputs are emitted in their declared order (stable definitions).
        stack.extend((inp.vertex, False) for inp in reversed(vtx.inputs)
                     if id(inp.vertex) not in digests)

    dg = digests[id(result.vertex)]
    terminal = pb.Op()
    terminal.inputs.add(digest=dg, index=result.index)
    data = terminal.SerializeToString(deterministic=True)
    definition_ops(definition).append(data)
    definition.metadata["sha256:" + hashlib.sha256(data).hexdigest()].SetInParent()
    return definition
