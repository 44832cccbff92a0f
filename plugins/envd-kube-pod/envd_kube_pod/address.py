"""The ``kube-pod`` address: which pods a context means, in which namespace and cluster.

Three forms, each optionally followed by ``?namespace=…&context=…&container=…``:

- ``<pod>`` or ``pod/<pod>``: one named pod, upstream envd's form, accepted as is;
- ``deployment/<name>``: the ready pods of a Deployment (the one ``envd bootstrap`` creates);
  the context keeps working when the pods are replaced;
- ``selector/<label selector>``: the ready pods matching a label selector
  (``selector/app=buildkitd,tier!=canary``).

Pure parsing, no Kubernetes client: ``envd context create`` checks addresses with it and
``envd context ls`` stays light.
"""

from __future__ import annotations

import re

import attrs

from envd_core.errors import ValidationError

# RFC 1123 names (pods, deployments) and labels (namespaces, containers): Kubernetes' rules.
_SUBDOMAIN_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# A selector term: key, an operator, values; checked loosely (the API server has the last word).
_SELECTOR_TERM_RE = re.compile(
    r"^!?[A-Za-z0-9][-A-Za-z0-9_./]*(\s*(=|==|!=)\s*[-A-Za-z0-9_.]*"
    r"|\s+(in|notin)\s+\([-A-Za-z0-9_.,\s]*\))?$")
_QUERY_KEYS = ("namespace", "context", "container")
KINDS = ("pod", "deployment", "selector")


@attrs.frozen
class Address:
    """A parsed ``kube-pod`` address."""

    #: ``pod``, ``deployment`` or ``selector``.
    kind: str
    #: The pod or deployment name, or the label selector.
    target: str
    namespace: str | None = None
    #: The kubeconfig context (``?context=``); overrides the ``kube-context`` option.
    context: str | None = None
    #: The container running buildkitd (default: the pod's first container).
    container: str | None = None

    def __str__(self) -> str:
        """The normalised form that is stored: upstream's bare ``<pod>`` stays bare."""
        head = self.target if self.kind == "pod" else f"{self.kind}/{self.target}"
        query = "&".join(f"{k}={v}" for k in _QUERY_KEYS
                         if (v := getattr(self, k)) is not None)
        return f"{head}?{query}" if query else head


def _split_selector(selector: str) -> list[str]:
    """Terms of a selector: commas inside ``in (a,b)`` do not split."""
    terms, depth, start = [], 0, 0
    for i, ch in enumerate(selector):
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            terms.append(selector[start:i])
            start = i + 1
    terms.append(selector[start:])
    return [t.strip() for t in terms]


def parse_address(address: str) -> Address:
    """Parse ``address`` (already without ``kube-pod://``); ValidationError names the fault."""
    head, sep, query = address.partition("?")
    kind, slash, target = head.partition("/")
    if not slash:
        kind, target = "pod", head
    if kind not in KINDS:
        raise ValidationError(
            f"`{kind}/` is not a kube-pod address kind (in `{address}`)",
            hint="use <pod>, pod/<pod>, deployment/<name> or selector/<label selector>")
    if kind == "selector":
        if not target or not all(_SELECTOR_TERM_RE.match(t) for t in _split_selector(target)):
            raise ValidationError(f"`{target}` is not a label selector (in `{address}`)",
                                  hint="e.g. selector/app=buildkitd,tier!=canary")
    elif not (target and len(target) <= 253 and _SUBDOMAIN_RE.match(target)):
        raise ValidationError(
            f"`{target}` is not a valid {kind} name (in `{address}`)",
            hint="Kubernetes names are lower-case letters, digits, `-` and `.`")
    found: dict[str, str] = {}
    if sep:
        for part in query.split("&"):
            key, eq, value = part.partition("=")
            if not eq or not value:
                raise ValidationError(f"bad query `{part}` in kube-pod address `{address}`",
                                      hint="write ?namespace=ns&context=kctx&container=c")
            if key not in _QUERY_KEYS:
                raise ValidationError(
                    f"kube-pod addresses do not take `?{key}=` (in `{address}`)",
                    hint="the parameters are namespace, context and container")
            found[key] = value
    for key in ("namespace", "container"):
        if key in found and not (len(found[key]) <= 63 and _LABEL_RE.match(found[key])):
            raise ValidationError(f"`{found[key]}` is not a valid {key} name (in `{address}`)")
    return Address(kind, target, found.get("namespace"), found.get("context"),
                   found.get("container"))
