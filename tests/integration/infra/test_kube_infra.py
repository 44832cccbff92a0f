"""The test cluster's files (``up --kube``), made in a scratch state dir: no daemon, no Go.

Whether the cluster really runs is checked by the kube-pod plugin's integration tests, which
start it (``plugins/envd-kube-pod/tests/integration``).
"""

from __future__ import annotations

import hashlib
import importlib
import json
import tarfile
from types import ModuleType


def _kube_files(envd_infra: ModuleType) -> ModuleType:
    return importlib.import_module("envd_infra.kube_files")


def test_pause_image_is_a_valid_oci_archive(envd_infra: ModuleType) -> None:
    files = _kube_files(envd_infra)
    path = files.pause_image_tar()
    with tarfile.open(path) as archive:
        blobs = {m.name: archive.extractfile(m).read()  # type: ignore[union-attr]
                 for m in archive.getmembers()}
    index = json.loads(blobs["index.json"])
    desc = index["manifests"][0]
    assert desc["annotations"]["io.containerd.image.name"] == files.PAUSE_IMAGE
    for name, data in blobs.items():  # every blob is stored under its own digest
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    manifest = json.loads(blobs[f"blobs/sha256/{desc['digest'].split(':')[1]}"])
    config = json.loads(blobs[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    assert config["config"]["Entrypoint"][:2] == ["/bin/busybox", "sh"]
    assert "trap 'exit 0' TERM" in config["config"]["Entrypoint"][-1]
    assert files.pause_image_tar() == path  # made once


def test_tokens_are_random_kept_and_listed(envd_infra: ModuleType) -> None:
    files = _kube_files(envd_infra)
    first = files.tokens()
    assert set(first) == {"admin", "node", "restricted"}
    assert len(set(first.values())) == 3 and all(len(t) == 48 for t in first.values())
    assert files.tokens() == first
    rows = (files.PKI / "tokens.csv").read_text().splitlines()
    assert f'{first["admin"]},envd-admin,envd-admin,"system:masters"' in rows
    node = "system:node:envd-kube-node"
    assert f'{first["node"]},{node},{node},"system:nodes"' in rows
    kubeconfig = json.loads(files.kubeconfig("restricted").read_text())
    assert kubeconfig["users"][0]["user"]["token"] == first["restricted"]
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"


def test_containerd_config_has_the_two_fixes(envd_infra: ModuleType) -> None:
    files = _kube_files(envd_infra)
    text = files.containerd_config().read_text()
    assert "restrict_oom_score_adj = true" in text
    assert f'sandbox_image = "{files.PAUSE_IMAGE}"' in text
    assert f'address = "{files.CONTAINERD_SOCK}"' in text
    hosts = files.CONTAINERD_DIR / "certs.d" / "127.0.0.1:5000" / "hosts.toml"
    assert 'server = "http://127.0.0.1:5000"' in hosts.read_text()


def test_status_and_env_without_a_cluster(envd_infra: ModuleType) -> None:
    kube = importlib.import_module("envd_infra.kube")
    assert kube.kube_status() == "not started (up --kube starts it)"
    assert kube.kube_env() == {"KUBECONFIG": ""}
    assert kube.down_kube() == []  # nothing of ours to stop or undo
