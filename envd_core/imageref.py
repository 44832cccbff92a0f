"""Image references (``[domain[:port]/]path[:tag][@digest]``): the one parser envd has.

It follows the Docker/distribution grammar. :func:`parse_reference` keeps a reference as written
(upstream's ``reference.Parse`` adds no ``docker.io/library``); :meth:`Reference.normalized` gives
the fully qualified form BuildKit's ``docker-image://`` source wants, and
:attr:`Reference.registry` the host whose credentials a push or pull needs. ``--tag``
normalisation, the LLB ``image()`` source and the Docker plugins all go through here.
"""

from __future__ import annotations

import re

import attrs

from envd_core.errors import ValidationError

__all__ = [
    "DEFAULT_REGISTRY",
    "ImageReferenceError",
    "Reference",
    "is_hex64",
    "parse_reference",
    "reference_problem",
]

#: The registry of a name without a domain, as Docker spells it in normalised names.
DEFAULT_REGISTRY = "docker.io"
#: Official images live under this path on Docker Hub (``busybox`` is ``library/busybox``).
_OFFICIAL_PREFIX = "library/"

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
_REFERENCE_RE = re.compile(rf"^(?P<name>{_NAME})(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$")
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")
NAME_MAX = 255


class ImageReferenceError(ValidationError):
    """A string is not a valid image reference."""


def _split_domain(name: str) -> tuple[str | None, str]:
    """Docker's rule: the first component is a registry only if it looks like a host."""
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        return first, rest
    return None, name


@attrs.frozen
class Reference:
    """A parsed image reference, kept as written (see :meth:`normalized`)."""

    #: The repository as written, with its domain if one was given (``127.0.0.1:5000/a/b``).
    name: str
    tag: str | None = None
    digest: str | None = None

    @property
    def domain(self) -> str | None:
        """The registry part as written (``localhost:5000``), ``None`` when there is none."""
        return _split_domain(self.name)[0]

    @property
    def path(self) -> str:
        """The repository path without the domain (``a/b``)."""
        return _split_domain(self.name)[1]

    @property
    def registry(self) -> str:
        """The registry host to authenticate against: the domain, else ``docker.io``."""
        return self.domain or DEFAULT_REGISTRY

    @property
    def repository(self) -> str:
        """The repository part Docker's push/pull API takes (the name as written)."""
        return self.name

    @property
    def tag_or_default(self) -> str:
        """The tag, else ``latest`` (what Docker assumes for a name without tag and digest)."""
        return self.tag or "latest"

    def normalized(self) -> Reference:
        """The fully qualified form: ``busybox`` → ``docker.io/library/busybox:latest``.

        ``latest`` is added only when there is neither a tag nor a digest, as Docker does.
        """
        domain, path = _split_domain(self.name)
        if domain is None:
            domain = DEFAULT_REGISTRY
            if "/" not in path:
                path = _OFFICIAL_PREFIX + path
        tag = self.tag if (self.tag or self.digest) else "latest"
        return Reference(f"{domain}/{path}", tag, self.digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag:
            out += ":" + self.tag
        if self.digest:
            out += "@" + self.digest
        return out


def reference_problem(text: str) -> str | None:
    """Why ``text`` is not a valid reference (distribution's wording), or None if it is."""
    if not text:
        return "repository name must have at least one component"
    match = _REFERENCE_RE.match(text)
    if match is None:
        if _REFERENCE_RE.match(text.lower()):
            return "repository name must be lowercase"
        return "invalid reference format"
    if len(match.group("name")) > NAME_MAX:
        return f"repository name must not be more than {NAME_MAX} characters"
    digest = match.group("digest")
    if digest:
        algo, _, hexpart = digest.partition(":")
        sizes = {"sha256": 64, "sha384": 96, "sha512": 128}
        if algo in sizes and len(hexpart) != sizes[algo]:
            return "invalid checksum digest length"
        if algo not in sizes:
            return "unsupported digest algorithm"
    return None


def parse_reference(text: str) -> Reference:
    """Parse ``text`` or raise :class:`ImageReferenceError` naming the problem."""
    problem = reference_problem(text)
    if problem is not None:
        raise ImageReferenceError(
            f"`{text}` is not a valid image reference: {problem}",
            hint="use [registry/]name[:tag][@digest], e.g. `127.0.0.1:5000/debian:bookworm`",
        )
    match = _REFERENCE_RE.match(text)
    assert match is not None  # reference_problem() returned None
    return Reference(match.group("name"), match.group("tag"), match.group("digest"))


def is_hex64(text: str) -> bool:
    """True for a 64-character lowercase hex string (an image ID, not a name)."""
    return bool(_HEX64_RE.match(text))
