"""envd-docker-client against the real shared dockerd: load, push, commit, dial-stdio."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
import threading
import time
import uuid
from typing import Any

import pytest
from envd_docker_client.client import open_client
from envd_docker_client.exec import dial_container_stdio
from envd_docker_client.images import commit_config, load_image, push_image

from envd_core.buildkit.client import BuildkitClient
from envd_core.buildkit.transport import connect_bridge
from envd_core.errors import BuilderError, RunnerError

BUSYBOX = "127.0.0.1:5000/busybox:latest"


class _CountingReader(io.RawIOBase):
    """A file that records the largest read, to prove the load is streamed in chunks."""

    def __init__(self, data: bytes) -> None:
        self.inner = io.BytesIO(data)
        self.largest = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        chunk = self.inner.read(n)
        self.largest = max(self.largest, len(chunk))
        return chunk


def test_save_load_commit_push_roundtrip(infra: dict[str, Any]) -> None:
    host = infra["DOCKER_HOST"]
    client = open_client(host)
    tag = f"127.0.0.1:5000/envd-client-test:{uuid.uuid4().hex[:8]}"
    client.api.tag(BUSYBOX, tag)
    try:
        saved = b"".join(client.api.get_image(tag))
        client.api.remove_image(tag)
        reader = _CountingReader(saved)
        assert load_image(client, host, reader) == [tag]  # type: ignore[arg-type]
        assert len(saved) > 2 << 20 and 0 < reader.largest <= 1 << 20  # sent in 1 MiB chunks

        commit_config(client, host, tag, {"Env": ["A=1"], "Labels": {"l": "v"},
                                          "WorkingDir": "/tmp", "Entrypoint": ["/bin/sh"]})
        config = client.api.inspect_image(tag)["Config"]
        assert "A=1" in config["Env"] and config["Labels"]["l"] == "v"
        assert (config["WorkingDir"], config["Entrypoint"]) == ("/tmp", ["/bin/sh"])
        assert config["Cmd"] is None  # with an entrypoint, the placeholder never leaks

        digest = push_image(client, host, tag)
        assert digest is not None and digest.startswith("sha256:")
    finally:
        client.api.remove_image(tag, force=True)


def test_a_cached_export_gets_its_earlier_commit_back(
        infra: dict[str, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same exported image + the same config: the earlier commit is tagged again (no new
    image per cached `envd up`); a new config, or the commit deleted meanwhile, commits anew."""
    monkeypatch.setenv("ENVD_CACHE_DIR", str(tmp_path))
    host = infra["DOCKER_HOST"]
    client = open_client(host)
    tag = f"envd-client-commit:{uuid.uuid4().hex[:8]}"
    made: set[str] = set()

    def export_and_commit(config: dict[str, Any]) -> str:
        client.api.tag(BUSYBOX, tag, force=True)  # what the moby exporter does on a rebuild
        committed = commit_config(client, host, tag, config)
        made.add(committed)
        assert client.api.inspect_image(tag)["Id"] == committed
        return committed

    try:
        first = export_and_commit({"Env": ["A=1"], "Entrypoint": ["/bin/sh"]})
        assert export_and_commit({"Env": ["A=1"], "Entrypoint": ["/bin/sh"]}) == first
        other = export_and_commit({"Env": ["A=2"], "Entrypoint": ["/bin/sh"]})
        assert other != first
        assert "A=2" in client.api.inspect_image(tag)["Config"]["Env"]
        client.api.tag(BUSYBOX, tag, force=True)
        client.api.remove_image(first, force=True)  # gone: made again, not an error
        again = export_and_commit({"Env": ["A=1"], "Entrypoint": ["/bin/sh"]})
        assert again != first and "A=1" in client.api.inspect_image(tag)["Config"]["Env"]
    finally:
        for image in (tag, *made):
            subprocess.run(["docker", "-H", host, "rmi", "-f", image], capture_output=True,
                           check=False)


def test_push_error_is_one_line(infra: dict[str, Any]) -> None:
    host = infra["DOCKER_HOST"]
    with pytest.raises(BuilderError) as info:
        push_image(open_client(host), host, "127.0.0.1:5000/envd-never-built:x",
                   error=BuilderError)
    assert "\n" not in str(info.value) and "`127.0.0.1:5000/envd-never-built:x`" in str(info.value)


def test_load_of_garbage_is_one_line(infra: dict[str, Any]) -> None:
    host = infra["DOCKER_HOST"]
    with pytest.raises(RunnerError) as info:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            data = json.dumps({"not": "an image"}).encode()
            member = tarfile.TarInfo("manifest.json")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        buf.seek(0)
        load_image(open_client(host), host, buf)
    assert "\n" not in str(info.value) and "load the image" in str(info.value)


def test_buildctl_dial_stdio_in_a_container(infra: dict[str, Any]) -> None:
    """``docker-container://NAME``'s meaning, through the Engine API: exec + hijacked stdio."""
    name = f"envd-bkclient-{uuid.uuid4().hex[:8]}"
    # --privileged is refused on this VM; these flags give buildkitd what it needs.
    run = subprocess.run(
        ["docker", "run", "-d", "--name", name, "--cap-add", "ALL", "--cap-drop", "SYS_RESOURCE",
         "--security-opt", "seccomp=unconfined", "--security-opt", "apparmor=unconfined",
         "--security-opt", "systempaths=unconfined", infra["BUILDKIT_IMAGE"]],
        capture_output=True, text=True, check=False, timeout=120,
    )
    assert run.returncode == 0, run.stderr
    try:
        # The container was started just now: its buildkitd may not listen yet, and dial-stdio
        # into a missing socket ends the stream (the bridge rightly gives up on that). Wait as
        # buildx's docker-container driver does, with `buildctl debug workers` in the container;
        # the docker-container builder's own wait is tested in its plugin.
        _wait_for_buildkitd(name)
        conn = connect_bridge(dial_container_stdio(name, host=infra["DOCKER_HOST"]),
                              target=f"docker-container://{name}", timeout=30)
        with conn:
            workers = BuildkitClient(conn).list_workers()
            assert any("linux/amd64" in w.platforms for w in workers)
        assert not [t for t in threading.enumerate() if t.name.startswith("envd-bk-bridge")]
    finally:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, check=False, timeout=60)


def _wait_for_buildkitd(container: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        probe = subprocess.run(["docker", "exec", container, "buildctl", "debug", "workers"],
                               capture_output=True, text=True, check=False, timeout=30)
        if probe.returncode == 0:
            return
        assert time.monotonic() < deadline, f"buildkitd in {container} not up: {probe.stderr}"
        time.sleep(0.2)


def test_dial_stdio_into_a_missing_container(infra: dict[str, Any]) -> None:
    dial = dial_container_stdio("envd-no-such-container", host=infra["DOCKER_HOST"],
                                error=BuilderError)
    with pytest.raises(BuilderError, match="container `envd-no-such-container` not found"):
        dial()
