"""The build graph (digest) and the OCI image config with upstream's labels."""

from __future__ import annotations

import json

from envd_core.envdfile.graph import BuildGraph, ExposeItem, JupyterConfig, RepoInfo
from envd_core.envdfile.image_config import (
    LABEL_APT,
    LABEL_CONTAINER_NAME,
    LABEL_CONTEXT,
    LABEL_DIGEST,
    LABEL_GENERAL_GRAPH,
    LABEL_PORTS,
    LABEL_PYPI,
    LABEL_REPO,
    LABEL_RUNTIME_GRAPH,
    LABEL_VENDOR,
    go_json,
    image_config,
)


def sample() -> BuildGraph:
    g = BuildGraph(image="debian:bookworm", dev=True)
    g.apt_packages = ["git"]
    g.python_packages = [["numpy"], ["rich", "attrs"]]
    g.jupyter = JupyterConfig()
    g.runtime.expose.append(ExposeItem(8000, 0, "web", ""))
    g.runtime.environ.update({"B": "2", "A": "1", "PATH": "/ignored"})
    g.runtime.env_paths.append("/opt/tools/bin")
    g.repo = RepoInfo(url="https://github.com/a/b")
    return g


def test_digest_is_stable_and_content_sensitive() -> None:
    a, b = sample(), sample()
    assert a.digest() == b.digest()
    assert a.digest().startswith("sha256:") and len(a.digest()) == 7 + 64
    b.apt_packages.append("curl")
    assert a.digest() != b.digest()


def test_digest_is_a_known_value() -> None:
    # Pinned: a changed digest means every user's cached image is rebuilt; change on purpose.
    assert BuildGraph().to_json().startswith('{"apt_packages":[],"apt_sources":[]')
    assert BuildGraph().digest() == (
        "sha256:5b85b4caea4aea3023d7cfb9330e72f71965e7331e7d6f066fa543bc36240af4"
    )


def test_image_config_shape_and_labels() -> None:
    g = sample()
    cfg = image_config(g, platform="linux/arm64/v8", environment_name="demo",
                       path_prefix=["/opt/envd/venv/bin"], working_dir="/work",
                       context_dir="/src/demo")
    assert (cfg["architecture"], cfg["os"], cfg["variant"]) == ("arm64", "linux", "v8")
    c = cfg["config"]
    assert c["Env"] == [
        "A=1", "B=2",
        # Upstream order: system PATH, then extra_path; our venv goes first (see env_paths).
        ("PATH=/opt/envd/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:"
         "/usr/bin:/sbin:/bin:/opt/tools/bin"),
        "LC_ALL=C.UTF-8", "LANG=C.UTF-8",
    ]
    assert c["WorkingDir"] == "/work"
    assert c["ExposedPorts"] == {"2222/tcp": {}, "8888/tcp": {}, "8000/tcp": {}}
    labels = c["Labels"]
    assert labels[LABEL_VENDOR] == "envd"
    assert labels[LABEL_CONTAINER_NAME] == "demo"
    assert labels[LABEL_DIGEST] == g.digest()
    assert json.loads(labels[LABEL_APT]) == ["git"]
    assert json.loads(labels[LABEL_PYPI]) == ["numpy", "rich", "attrs"]
    assert json.loads(labels[LABEL_PORTS]) == [
        {"name": "ssh", "port": 2222}, {"name": "jupyter", "port": 8888},
        {"name": "web", "port": 8000}]
    assert json.loads(labels[LABEL_REPO]) == {"url": "https://github.com/a/b"}
    assert labels[LABEL_CONTEXT] == "/src/demo"
    runtime = json.loads(labels[LABEL_RUNTIME_GRAPH])
    assert runtime["environ"] == {"B": "2", "A": "1"}
    assert runtime["env_paths"] == c["Env"][2].removeprefix("PATH=").split(":")
    assert runtime["expose"][0] == {"EnvdPort": 8000, "HostPort": 0, "ServiceName": "web",
                                    "ListeningAddr": ""}
    assert "Entrypoint" not in c and "User" not in c


def test_non_dev_images_expose_nothing_and_keep_entrypoint_and_owner() -> None:
    g = BuildGraph()
    g.entrypoint = ["python", "app.py"]
    g.owner_uid, g.owner_gid = 1000, 100
    g.labels["org.example"] = "x"
    c = image_config(g)["config"]
    assert "ExposedPorts" not in c
    assert c["Entrypoint"] == ["python", "app.py"]
    assert c["User"] == "1000:100"
    assert c["Labels"]["org.example"] == "x"
    assert "ai.tensorchord.envd.gpu" not in c["Labels"]


def test_gpu_labels() -> None:
    g = BuildGraph(cuda="12.2.0", cudnn="8")
    labels = image_config(g)["config"]["Labels"]
    assert labels["ai.tensorchord.envd.gpu"] == "true"
    assert labels["ai.tensorchord.envd.gpu.cuda"] == "12.2.0"


def test_go_json_escapes_like_go() -> None:
    assert go_json({"a": "<b>&"}) == '{"a":"\\u003cb\\u003e\\u0026"}'


def test_general_graph_label_has_upstreams_go_field_names() -> None:
    g = sample()
    g.entrypoint = ["python"]
    labels = image_config(g, environment_name="demo", context_dir="/src/demo")["config"]["Labels"]
    general = json.loads(labels[LABEL_GENERAL_GRAPH])
    # Go's declaration order of generalGraph, embedded JupyterConfig flattened after Repo.
    keys = list(general)
    assert keys[:4] == ["Languages", "CodeAgents", "EnvdSyntaxVersion", "Image"]
    assert keys[keys.index("Repo") + 1:keys.index("Repo") + 3] == ["Token", "Port"]
    assert keys[-1] == "Platform"
    assert general["SystemPackages"] == ["git"]
    assert general["PyPIPackages"] == [["numpy"], ["rich", "attrs"]]
    assert general["Entrypoint"] == ["python"]
    assert (general["EnvironmentName"], general["EnvironmentPath"]) == ("demo", "/src/demo")
    assert general["Platform"] == {"architecture": "amd64", "os": "linux"}
    assert general["env_paths"] == json.loads(labels[LABEL_RUNTIME_GRAPH])["env_paths"]
    assert general["CUDA"] is None and general["CUDNN"] == "8"


def test_a_users_locale_wins_over_upstreams_default() -> None:
    g = BuildGraph()
    g.runtime.environ["LANG"] = "de_DE.UTF-8"
    env = image_config(g)["config"]["Env"]
    assert "LANG=de_DE.UTF-8" in env and "LANG=C.UTF-8" not in env
    assert env[-1] == "LC_ALL=C.UTF-8"


def test_labels_have_one_definition() -> None:
    # the labels envd reads back are the reader's own objects, not a second set of literals
    from envd_core import listing
    from envd_core.envdfile import image_config
    from envd_core.environments import names

    for label in ("LABEL_GPU", "LABEL_CUDA", "LABEL_CUDNN"):
        assert getattr(image_config, label) is getattr(listing, label)
    for label in ("LABEL_PREFIX", "LABEL_VENDOR", "LABEL_PORTS", "LABEL_APT", "LABEL_PYPI",
                  "LABEL_CONTEXT", "LABEL_RUNTIME_GRAPH", "LABEL_GENERAL_GRAPH", "VENDOR_ENVD"):
        assert getattr(image_config, label) is getattr(names, label)
    assert image_config.LABEL_DIGEST == "ai.tensorchord.envd.build.digest"
