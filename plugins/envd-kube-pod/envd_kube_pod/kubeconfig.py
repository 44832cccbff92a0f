"""Loading a kubeconfig once per build, with a fast parser.

The client's own entry points (``new_client_from_config``, ``list_kube_config_contexts``) each
read and parse the file, with PyYAML's pure-Python ``safe_load``: for the admin kubeconfig of
the test cluster that was ~6 ms of CPU per parse, two parses per build, measured in a process
with every module already imported (bench/README.md, bench_kube ``--warm``). Here the file is
parsed once, as JSON when it is JSON (what ``kubectl config view -o json`` and many generators
write) and otherwise with libyaml's ``CSafeLoader`` when PyYAML has it (same safe semantics),
and the client's ``KubeConfigLoader`` does everything else: contexts, clusters, users, exec
credential plugins, certificate files and data, token files.

Left to the client entirely (its ``KubeConfigMerger``, parsed once): several files in
``KUBECONFIG``, and a user with an ``auth-provider`` (gcp, azure, oidc), whose refreshed token
the client writes back into the file; envd keeps that behaviour rather than re-implement it.
"""

from __future__ import annotations

import json
import os
from typing import Any


def parse(path: str) -> Any:
    """The document in the kubeconfig file ``path`` (JSON fast path, else YAML, safe)."""
    import yaml  # type: ignore[import-untyped]  # no stubs installed; used untyped

    with open(path, "rb") as handle:
        raw = handle.read()
    if raw.lstrip()[:1] == b"{":
        try:
            return json.loads(raw)
        except ValueError:
            pass  # YAML flow style that is not JSON: the YAML parser reads it
    loader = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
    return yaml.load(raw, Loader=loader)  # a safe loader, C or Python


def _one_line(exc: Exception) -> str:
    """A YAML error in one line: the problem and where (PyYAML's text spans three lines)."""
    problem = getattr(exc, "problem", None)
    mark = getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


def _writes_back(document: Any) -> bool:
    """Whether a user of ``document`` has an ``auth-provider`` (the client persists its
    refreshed tokens into the file)."""
    users = document.get("users") if isinstance(document, dict) else None
    return any(isinstance(u, dict) and isinstance(u.get("user"), dict)
               and "auth-provider" in u["user"] for u in users or [])


def load(files: str, context: str | None) -> tuple[Any, str | None]:
    """``(ApiClient, namespace of the active context or None)`` for the kubeconfig ``files``
    (``os.pathsep``-separated, as in ``KUBECONFIG``) and kube ``context`` (None: current).

    Raises the client's ``ConfigException`` for an unusable file or a missing context.
    """
    import yaml
    from kubernetes import client
    from kubernetes.config import kube_config as typed_kube_config
    from kubernetes.config.config_exception import ConfigException

    kube_config: Any = typed_kube_config  # untyped
    paths = [p for p in (os.path.expanduser(f) for f in files.split(os.pathsep) if f)
             if os.path.exists(p)]
    loader: Any = None
    if len(paths) == 1:
        try:
            document = parse(paths[0])
        except OSError as exc:
            raise ConfigException(f"cannot read {paths[0]}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ConfigException(f"invalid YAML: {_one_line(exc)}") from None
        if not isinstance(document, dict):
            raise ConfigException(f"invalid kube-config: {paths[0]} holds no configuration")
        if not _writes_back(document):
            # The path on the root node is what relative certificate paths resolve against.
            root = kube_config.ConfigNode(paths[0], document, paths[0])
            loader = kube_config.KubeConfigLoader(config_dict=root, active_context=context,
                                                  config_base_path=None)
    if loader is None:
        merger = kube_config.KubeConfigMerger(files)
        if merger.config is None:
            raise ConfigException("invalid kube-config: no configuration found")
        loader = kube_config.KubeConfigLoader(config_dict=merger.config,
                                              active_context=context, config_base_path=None,
                                              config_persister=merger.save_changes)
    # type.__call__: a fresh Configuration, not a copy of a process-wide default (the
    # client's own loaders do the same).
    configuration = type.__call__(client.Configuration)
    loader.load_and_set(configuration)
    active = loader.current_context or {}
    namespace = (active.get("context") or {}).get("namespace") if isinstance(active, dict) \
        else None
    return client.ApiClient(configuration), namespace
