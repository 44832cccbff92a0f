"""Unit tests of the kubeconfig loading (``envd_kube_pod.kubeconfig``): one fast parse, and the
client's meaning kept (relative certificate paths, contexts, namespaces, merged files, tokens
written back for auth providers). No cluster: a kubeconfig is only read here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from envd_kube_pod import KubePodBuilder
from envd_kube_pod.kubeconfig import load, parse

from envd_core.errors import ErrorKind


def kubeconfig(server: str = "https://10.0.0.1:6443", *, ns: str | None = "team",
               ca: str = "pki/ca.pem", user: dict[str, Any] | None = None,
               extra_context: str | None = None) -> dict[str, Any]:
    """A kubeconfig document with one cluster, one user and a context or two."""
    contexts = [{"name": "main", "context": {"cluster": "c", "user": "u",
                                             **({"namespace": ns} if ns else {})}}]
    if extra_context:
        contexts.append({"name": extra_context,
                         "context": {"cluster": "c", "user": "u", "namespace": extra_context}})
    return {"apiVersion": "v1", "kind": "Config", "current-context": "main",
            "clusters": [{"name": "c", "cluster": {"server": server,
                                                   "certificate-authority": ca}}],
            "users": [{"name": "u", "user": user or {"token": "secret-token"}}],
            "contexts": contexts}


def write(path: Path, doc: dict[str, Any], form: str = "yaml") -> Path:
    """Write ``doc`` at ``path`` and a CA file where its relative ``pki/ca.pem`` points (the
    client checks that the file exists)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.parent / "pki").mkdir(exist_ok=True)
    (path.parent / "pki" / "ca.pem").write_text("not read here\n")
    path.write_text(json.dumps(doc) if form == "json" else yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("form", ["json", "yaml"])
def test_load_reads_server_token_namespace_and_relative_ca(tmp_path: Path, form: str) -> None:
    doc = kubeconfig(extra_context="other")
    path = write(tmp_path / "conf" / "config", doc, form)
    api, ns = load(str(path), None)
    assert api.configuration.host == "https://10.0.0.1:6443"
    assert api.configuration.api_key == {"BearerToken": "Bearer secret-token"}
    # relative to the kubeconfig's folder, as kubectl resolves it
    assert api.configuration.ssl_ca_cert == str(tmp_path / "conf" / "pki" / "ca.pem")
    assert ns == "team"
    assert load(str(path), "other")[1] == "other"


def test_json_is_not_parsed_as_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config"
    path.write_text(json.dumps(kubeconfig()))

    def no_yaml(*args: object, **kwargs: object) -> None:
        raise AssertionError("a JSON kubeconfig went through the YAML parser")

    monkeypatch.setattr(yaml, "load", no_yaml)
    assert parse(str(path))["current-context"] == "main"


def test_yaml_uses_libyaml_when_pyyaml_has_it(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    if not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("this PyYAML was built without libyaml")  # the Python loader is used
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(kubeconfig()))
    loaders: list[object] = []
    real = yaml.load

    def spy(stream: Any, Loader: Any) -> Any:
        loaders.append(Loader)
        return real(stream, Loader=Loader)

    monkeypatch.setattr(yaml, "load", spy)
    assert parse(str(path))["kind"] == "Config"
    assert loaders == [yaml.CSafeLoader]


def test_the_file_is_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The client's own entry points parsed it twice per build (a client and the contexts)."""
    path = write(tmp_path / "config", kubeconfig())
    opened: list[str] = []
    real_open = open

    def counting_open(file: Any, *args: Any, **kwargs: Any) -> Any:
        if str(file) == str(path):
            opened.append(str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr("builtins.open", counting_open)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    cluster = KubePodBuilder("deployment/bk", {"kubeconfig": str(path)}).cluster()
    try:
        assert cluster.namespace == "team" and cluster.server == "https://10.0.0.1:6443"
    finally:
        cluster.close()
    assert len(opened) == 1


def test_several_files_merge_as_the_client_does(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    write(first, kubeconfig(ns=None))
    doc = kubeconfig("https://10.9.9.9:6443", extra_context="ci")
    doc["clusters"][0]["name"] = "c2"
    doc["contexts"] = [{"name": "ci", "context": {"cluster": "c2", "user": "u",
                                                  "namespace": "ci"}}]
    del doc["current-context"]
    write(second, doc)
    api, ns = load(os.pathsep.join([str(first), str(second)]), "ci")
    assert (api.configuration.host, ns) == ("https://10.9.9.9:6443", "ci")
    api, ns = load(os.pathsep.join([str(first), str(second)]), None)
    assert (api.configuration.host, ns) == ("https://10.0.0.1:6443", None)


def test_auth_provider_keeps_the_clients_write_back(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A user with an auth-provider goes through the client's merger, whose persister writes
    refreshed tokens back into the file (kept as it was)."""
    from kubernetes.config import kube_config

    path = tmp_path / "config"
    user = {"auth-provider": {"name": "oidc", "config": {"id-token": "x"}}}
    path.write_text(yaml.safe_dump(kubeconfig(user=user)))
    persisters: list[object] = []
    real = kube_config.KubeConfigLoader.__init__

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        persisters.append(kwargs.get("config_persister"))
        raise kube_config.ConfigException("stop here")  # the oidc refresh needs a server

    monkeypatch.setattr(kube_config.KubeConfigLoader, "__init__", spy)
    with pytest.raises(kube_config.ConfigException):
        load(str(path), None)
    monkeypatch.setattr(kube_config.KubeConfigLoader, "__init__", real)
    assert len(persisters) == 1 and persisters[0] is not None


@pytest.mark.parametrize(("content", "fragment"), [
    ("{not json: [", "invalid YAML: did not find expected node content at line 2"),
    ("- just\n- a list\n", "holds no configuration"),
    (json.dumps(kubeconfig()).replace('"current-context": "main"',
                                      '"current-context": "gone"'), "gone"),
])
def test_bad_kubeconfig_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    content: str, fragment: str) -> None:
    path = tmp_path / "config"
    path.write_text(content)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    status = KubePodBuilder("deployment/bk", {"kubeconfig": str(path)}).status(timeout=1)
    assert not status.reachable and status.error_kind == ErrorKind.INVALID, status
    assert status.error is not None and "\n" not in status.error
    assert status.error.startswith(f"no cluster: the kubeconfig `{path}` is unusable")
    assert fragment in status.error
