"""Reusing the last result: ``envd up`` of an unchanged project skips the solve and the export.

When the definition cache hits (:mod:`envd_core.pipeline.defcache`), the LLB and the image
config are the very bytes of the last build. A solve of them on dockerd's own BuildKit (the
``moby`` exporter) then finds every step in its cache, exports the same layers, and the image
config is committed onto the same image again: the tag ends where it already is. This module
recognises that case and skips the connection, the session, the solve and the image config
(~55 ms of a quiet ``envd up``, three Docker requests and a BuildKit session).

It must be exactly as correct as the solve it replaces. A cached solve reads nothing but its
sources again, so the rules are about sources, and about the image still being the one made:

1. only ``envd up`` without ``--force`` asks for it (``BuildRequest.reuse``), with the
   definition cache on (``ENVD_EVAL_CACHE=0`` turns this off too); a record names the
   *definition* it was made from (a SHA-256 of the LLB bytes and the image config), so it
   applies to those exact bytes however they were obtained (a cache hit, or a compile that
   gave them again);
2. the ``moby`` exporter with no push, no ``--export-cache``/``--import-cache``, no
   ``--no-cache``, and a runner on the very daemon the builder exports into (its ``host`` is the
   builder's ``docker_host``): the image must be where the runner looks;
3. the definition has no local source (its content is not in the definition), and every other
   source is a ``docker-image`` without a forced pull: git and http sources are re-resolved by
   every solve (a branch or a URL may move);
4. dockerd's BuildKit resolves a base image tag from dockerd's own image store when it is there
   (it pulls only otherwise), so each base tag must be in that store, with the image id it had
   when the last result was recorded (recorded *before* that solve: a tag moved during the solve
   can only make the record disagree, never agree wrongly); a tag not in the store is pulled by
   each solve, so it is never recorded;
5. the image tag still names the image id that result produced (the record, written after that
   solve and its image config): deleted, re-tagged or rebuilt by hand, it is solved again.

What a skipped solve cannot redo: steps whose build cache was pruned since. The image they made
is still there, and is what an unchanged definition describes; a solve would re-run them and may
get other package versions, which is what ``envd build --no-cache`` is for.

Records live next to the definition cache, ``<cache dir>/results/<sha256>.json``, one per
(definition, tag, daemon), written atomically; an unreadable one is a miss. ``envd build`` never
reuses (it is asked to build), but its solves move tags: rule 5 sees that.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path
from typing import Any

__all__ = ["Reuse", "plan"]

RECORD_VERSION = 1
_IMAGE_SOURCE = "docker-image://"
#: Resolve modes under which dockerd's BuildKit takes a base tag from its image store.
_LOCAL_MODES = ("", "default", "local", "prefer-local")


def _records_dir() -> Path:
    from envd_core.pipeline.defcache import cache_dir

    return cache_dir().parent / "results"


def image_sources(definition_bytes: bytes) -> list[str] | None:
    """The references of the definition's ``docker-image`` sources, or ``None`` when it has
    any other source (local, git, http, oci-layout) or a base it always pulls."""
    from envd_core.buildkit._pb import ops_pb2

    definition = ops_pb2.Definition.FromString(definition_bytes)
    refs: list[str] = []
    for raw in getattr(definition, "def"):  # a Python keyword as a field name
        op = ops_pb2.Op.FromString(raw)
        if op.WhichOneof("op") != "source":
            continue
        identifier = op.source.identifier
        if not identifier.startswith(_IMAGE_SOURCE):
            return None
        if op.source.attrs.get("image.resolvemode", "") not in _LOCAL_MODES:
            return None
        refs.append(identifier[len(_IMAGE_SOURCE):])
    return sorted(set(refs))


class Reuse:
    """One eligible build: :meth:`attempt` says whether its last result still stands,
    :meth:`before_solve` and :meth:`after_solve` record a new one around a real solve."""

    def __init__(self, key: str, tag: str, host: str, bases: list[str], runner: Any) -> None:
        #: SHA-256 of the definition bytes and the image config (:func:`definition_digest`).
        self.key = key
        self.tag = tag
        self.host = host
        self.bases = bases
        self.runner = runner
        digest = hashlib.sha256(f"{key}\0{tag}\0{host}".encode()).hexdigest()
        self.path = _records_dir() / f"{digest}.json"
        self._bases_now: dict[str, str] | None = None
        self._record: list[dict[str, Any] | None] | None = None

    def _image_id(self, ref: str) -> str | None:
        found = self.runner.find_image(ref)
        return str(found.id) if found is not None and found.id else None

    def record(self) -> dict[str, Any] | None:
        """The record of this definition, tag and daemon, if a well-formed one exists (read
        once: :func:`plan` and :meth:`attempt` share it)."""
        if self._record is None:
            self._record = [self._read()]
        return self._record[0]

    def _read(self) -> dict[str, Any] | None:
        try:
            with open(self.path, "rb") as fh:
                doc = json.loads(fh.read())
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or doc.get("version") != RECORD_VERSION:
            return None
        if doc.get("key") != self.key or doc.get("tag") != self.tag or doc.get("host") != self.host:
            return None
        bases = doc.get("bases")
        if not isinstance(bases, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in bases.items()):
            return None
        return doc

    def attempt(self) -> bool:
        """Whether the tag still names the recorded result and every base tag the image it
        had then (rules 4 and 5)."""
        doc = self.record()
        if doc is None:
            return False
        if sorted(doc["bases"]) != self.bases or not doc.get("image"):
            return False
        if self._image_id(self.tag) != doc["image"]:
            return False
        return all(self._image_id(ref) == doc["bases"][ref] for ref in self.bases)

    def before_solve(self) -> None:
        """Look up each base tag before the solve (rule 4); a missing one means no record."""
        self.forget()  # the solve replaces the tag: the old record no longer describes it
        self._record = None
        ids: dict[str, str] = {}
        for ref in self.bases:
            found = self._image_id(ref)
            if found is None:
                return
            ids[ref] = found
        self._bases_now = ids

    def after_solve(self) -> None:
        """Record the image the tag names now, with the base ids seen before the solve."""
        if self._bases_now is None:
            return
        image = self._image_id(self.tag)
        if image is None:
            return
        from envd_core.atomic import write_atomic
        from envd_core.errors import EnvdError

        doc = {"version": RECORD_VERSION, "key": self.key, "tag": self.tag, "host": self.host,
               "image": image, "bases": self._bases_now}
        with contextlib.suppress(OSError, EnvdError):  # only a cache: a failure costs a solve
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(self.path, json.dumps(doc, sort_keys=True).encode())
            from envd_core.pipeline.defcache import _prune

            _prune(self.path.parent, MAX_RECORDS)
        self._record = None

    def forget(self) -> None:
        """Drop the record (a solve is about to move the tag)."""
        with contextlib.suppress(OSError):
            self.path.unlink()


#: How many records are kept (the most recently written).
MAX_RECORDS = 64


def definition_digest(definition_bytes: bytes, image_config: Any) -> str:
    """What a record is made from: the LLB as sent and the image config committed."""
    digest = hashlib.sha256(definition_bytes)
    digest.update(b"\0" + json.dumps(image_config, sort_keys=True).encode())
    return digest.hexdigest()


def plan(*, request: Any, compiled: Any, kind: str, push_after: bool,
         exporter_attrs: dict[str, str], builder: Any, runner: Any) -> Reuse | None:
    """The :class:`Reuse` of this build when rules 1-3 allow it, else ``None``."""
    from envd_core.pipeline.defcache import enabled

    if not getattr(request, "reuse", False) or runner is None or not enabled():
        return None
    if kind != "moby" or push_after or request.no_cache or request.export_cache \
            or request.import_cache or request.dump_llb:
        return None
    host = getattr(builder, "docker_host", None)
    if not host or getattr(runner, "host", None) != host or not runner.can_manage_images:
        return None
    if compiled.local_dirs:
        return None
    definition_bytes = getattr(compiled, "definition_bytes", None)
    if definition_bytes is None:
        definition_bytes = compiled.definition.SerializeToString(deterministic=True)
    key = definition_digest(definition_bytes, compiled.image_config)
    found = Reuse(key, exporter_attrs.get("name", ""), str(host), [], runner)
    doc = found.record()
    if doc is not None:
        # a record is only written for a definition whose sources passed rule 3, and its bases
        # are those sources: no need to parse the definition (a protobuf import, ~50 ms in a
        # fresh process) to know them again
        found.bases = sorted(doc["bases"])
        return found
    bases = image_sources(definition_bytes)
    if bases is None:
        return None
    found.bases = bases
    return found
