"""Image references (``[domain[:port]/]path[:tag][@digest]``) as the Docker/distribution grammar.

Only parsing and validation: enough for ``--tag`` normalisation and error messages; no
``docker.io/library`` expansion (upstream's ``reference.Parse`` does not add it either).
"""

from __future__ import annotations

import re

import attrs

from envd_core.envdfile.errors import BuildOptionError

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


@attrs.frozen
class Reference:
    """A parsed image reference."""

    name: str
    tag: str | None = None
    digest: str | None = None

    @property
    def domain(self) -> str | None:
        """The registry part (``localhost:5000``), if the name has one."""
        match = _REFERENCE_RE.match(self.name)
        return match.group("domain") if match else None

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
    """Parse ``text`` or raise :class:`BuildOptionError` naming the problem."""
    problem = reference_problem(text)
    if problem is not None:
        raise BuildOptionError(f"`{text}` is not a valid image reference: {problem}")
    match = _REFERENCE_RE.match(text)
    assert match is not None  # reference_problem() returned None
    return Reference(match.group("name"), match.group("tag"), match.group("digest"))


def is_hex64(text: str) -> bool:
    """True for a 64-character lowercase hex string (an image ID, not a name)."""
    return bool(_HEX64_RE.match(text))
