"""Fixtures for the kube-pod builder against the real cluster of ``scripts/infra up --kube``.

The cluster is started by the first test that needs it (``scripts/infra up --kube``: the first
run on a machine builds it from the Go module proxy, ~15-20 min here), and stopped by
``scripts/infra down`` with the rest of the infra. Each test gets a namespace of its own,
deleted afterwards with everything in it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[4]
INFRA = REPO / "scripts" / "infra"
# The seed environment and the envd runner live with the core's pipeline tests.
sys.path.insert(0, str(REPO / "tests" / "integration" / "pipeline"))


def _env() -> dict[str, Any]:
    out = subprocess.run([sys.executable, str(INFRA), "env", "--json"], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    return json.loads(out)  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def kube(infra: dict[str, Any]) -> dict[str, Any]:
    """The infra's endpoints with a running cluster (started here when it is not)."""
    env = _env()
    if not env.get("KUBECONFIG"):
        if os.geteuid() != 0:
            pytest.skip("the test cluster is not running and only root can start it "
                        "(`scripts/infra up --kube`)")
        proc = subprocess.run([sys.executable, str(INFRA), "up", "--kube", "--skip-upstream"],
                              capture_output=True, text=True, timeout=3600, check=False)
        assert proc.returncode == 0, f"infra up --kube failed:\n{proc.stdout}\n{proc.stderr}"
        env = _env()
    assert env["KUBECONFIG"], env
    return env


@pytest.fixture(scope="session")
def kube_api(kube: dict[str, Any]) -> Any:
    """A ``kubernetes`` ApiClient as the cluster admin (to set up and inspect behind envd)."""
    from kubernetes import config

    api = config.new_client_from_config(config_file=kube["KUBECONFIG"])
    _delete_stale_namespaces(api)
    return api


#: A test namespace older than this was left by a run that was killed before its teardown.
STALE_NAMESPACE_AGE = 3600.0


def _delete_stale_namespaces(api: Any) -> None:
    """Delete ``envd-t-*`` namespaces a killed run left behind: the cluster's state survives
    ``infra down``, so their BuildKit pods would start again with every cluster and take the
    CPU of the tests that follow (one was found running beside a CI run). Young ones may be
    another session's on the same cluster: left alone."""
    import datetime as dt

    from kubernetes import client

    core = client.CoreV1Api(api)
    now = dt.datetime.now(dt.timezone.utc)
    for ns in core.list_namespace().items:
        created = ns.metadata.creation_timestamp
        if ns.metadata.name.startswith("envd-t-") and created is not None and \
                (now - created).total_seconds() > STALE_NAMESPACE_AGE:
            core.delete_namespace(ns.metadata.name, grace_period_seconds=0,
                                  propagation_policy="Background")


@pytest.fixture
def namespace(kube_api: Any) -> Iterator[str]:
    """A fresh namespace, deleted with its contents afterwards."""
    from kubernetes import client

    core = client.CoreV1Api(kube_api)
    name = f"envd-t-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name}})
    # Pods are admitted only once the namespace's default ServiceAccount exists.
    deadline = time.monotonic() + 60
    while not core.list_namespaced_service_account(name).items:
        assert time.monotonic() < deadline, "no default ServiceAccount in the new namespace"
        time.sleep(0.3)
    yield name
    core.delete_namespace(name, grace_period_seconds=0, propagation_policy="Background")


@pytest.fixture
def kube_options(kube: dict[str, Any]) -> dict[str, str]:
    """Options every test context needs here: the admin kubeconfig, the local BuildKit image,
    and the node's network (so buildkitd reaches the registry on 127.0.0.1:5000)."""
    return {"kubeconfig": kube["KUBECONFIG"], "image": kube["BUILDKIT_IMAGE_REF"],
            "host-network": "true", "timeout": "600"}


@pytest.fixture(autouse=True)
def _isolated_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Routing memory and contexts in a private config dir; no stray context or timeout."""
    monkeypatch.setenv("ENVD_CONFIG_DIR", str(tmp_path / "envd-config"))
    monkeypatch.delenv("ENVD_CONTEXT", raising=False)
    monkeypatch.delenv("BUILDKIT_CONNECTING_TIMEOUT", raising=False)
