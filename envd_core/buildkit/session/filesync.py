"""FileSync: the ``DiffCopy`` service that sends local directories to the daemon.

This module holds what a transfer is asked for (the named directories, their filters, the
daemon's metadata) and what it reports (`TransferStats`); the protocol itself, the listing, its
pacing and the requested files, is `sender.Sender`.
"""

from __future__ import annotations

import os
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from envd_core.buildkit.session.h2serve import Framed
from envd_core.buildkit.session.patterns import parse_ignore_file
from envd_core.buildkit.session.sender import ProtocolError, Sender
from envd_core.buildkit.session.walk import Filter, resolve_follow_paths
from envd_core.errors import ValidationError

if TYPE_CHECKING:
    from envd_core.buildkit.session.h2serve import CallContext, RequestStream

DIFFCOPY_METHOD = "/moby.filesync.v1.FileSync/DiffCopy"


@dataclass(frozen=True)
class LocalDir:
    """A local directory the daemon may read as ``local://NAME``.

    ``include``/``exclude``/``follow_paths`` are applied on top of whatever the daemon asks for;
    with ``use_dockerignore`` the directory's ``.dockerignore`` adds excludes as Docker does.
    """

    path: str | os.PathLike[str]
    include: Sequence[str] = ()
    exclude: Sequence[str] = ()
    follow_paths: Sequence[str] = ()
    use_dockerignore: bool = True

    def root(self) -> str:
        """The absolute directory path; raises `ValidationError` if it is not a directory."""
        root = os.path.abspath(os.fspath(self.path))
        if not os.path.isdir(root):
            raise ValidationError(
                f"local directory `{root}` does not exist or is not a directory; "
                "create it or point the build at an existing directory"
            )
        return root

    def ignore_patterns(self) -> list[str]:
        """Excludes from ``.dockerignore`` (empty when disabled or absent)."""
        if not self.use_dockerignore:
            return []
        try:
            with open(os.path.join(self.root(), ".dockerignore"), encoding="utf-8") as fh:
                return parse_ignore_file(fh.read())
        except FileNotFoundError:
            return []


@dataclass
class TransferStats:
    """What one DiffCopy call sent: counted on the sender, for tests and benchmarks.

    Reported when the call starts and updated live; ``finished`` turns true at the end.
    """

    dir_name: str
    entries: int = 0
    files_requested: int = 0
    data_packets: int = 0
    data_bytes: int = 0
    bytes_by_path: dict[str, int] = field(default_factory=dict)
    #: Times the listing paused for the daemon to catch up (`sender` pacing), and how many of
    #: those pauses ran out with no request.
    listing_waits: int = 0
    listing_timeouts: int = 0
    finished: bool = False


def _metadata_values(md: Mapping[str, list[str]], key: str) -> list[str]:
    values = md.get(key, [])
    if md.get(f"{key}-encoded", ["0"])[0] in ("1", "true"):
        values = [urllib.parse.unquote_plus(v) for v in values]
    return [v for v in values if v]


def invocation_metadata(context: CallContext) -> dict[str, list[str]]:
    """Incoming metadata as lowercase key -> list of values."""
    md: dict[str, list[str]] = {}
    for key, value in context.invocation_metadata():
        md.setdefault(key.lower(), []).append(value)
    return md


class FileSyncService:
    """Serves ``FileSync/DiffCopy`` for a fixed set of named directories."""

    def __init__(
        self,
        dirs: Mapping[str, LocalDir],
        on_transfer: Callable[[TransferStats], None] | None = None,
    ) -> None:
        self.dirs = dict(dirs)
        self.on_transfer = on_transfer

    def filter_for(self, local: LocalDir, md: Mapping[str, list[str]]) -> Filter:
        """Combine the directory's own rules with the daemon's request (fsutil FilterFS)."""
        root = local.root()
        includes = list(local.include) + _metadata_values(md, "include-patterns")
        daemon_excludes = _metadata_values(md, "exclude-patterns")
        if md.get("override-excludes", ["false"])[0] == "true" and daemon_excludes:
            excludes = daemon_excludes
        else:
            excludes = list(local.exclude) + local.ignore_patterns() + daemon_excludes
        follow = list(local.follow_paths) + _metadata_values(md, "followpaths")
        if follow:
            includes += follow + resolve_follow_paths(root, follow)
        return Filter.build(includes, excludes)

    def diff_copy(self, request_iterator: RequestStream, context: CallContext) -> Iterator[Framed]:
        """The gRPC handler (served by `h2serve`): a generator of outgoing packets."""
        import grpc

        md = invocation_metadata(context)
        name = (md.get("dir-name") or [""])[0]
        local = self.dirs.get(name)
        if local is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no access allowed to dir {name!r}")
        try:
            flt = self.filter_for(local, md)
            root = local.root()
        except ValidationError as exc:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        stats = TransferStats(dir_name=name)
        return self._send(root, flt, request_iterator, context, stats)

    def _send(
        self,
        root: str,
        flt: Filter,
        request_iterator: RequestStream,
        context: CallContext,
        stats: TransferStats,
    ) -> Iterator[Framed]:
        if self.on_transfer is not None:
            self.on_transfer(stats)
        try:
            yield from Sender(root, flt, request_iterator, stats).run()
        except (ProtocolError, OSError) as exc:
            import grpc

            context.abort(grpc.StatusCode.INTERNAL, str(exc))
        finally:
            stats.finished = True
