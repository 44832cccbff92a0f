"""Names, flag parsing and the EnvironmentSpec ``up``/``run`` build from flags + image labels."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _environments_support import ENVD_LABELS

from envd_core.environment import GPURequest
from envd_core.environments.names import environment_name, project_dir_in_environment, ssh_host
from envd_core.environments.spec import (
    KEEPALIVE,
    LaunchOptions,
    build_spec,
    parse_duration,
    parse_gpu_set,
    parse_memory,
    parse_volume,
)
from envd_core.errors import ValidationError


@pytest.mark.parametrize(("directory", "expected"), [
    ("proj", "proj"),
    ("My Project!", "MyProject"),
    ("_hidden-dir", "hidden-dir"),
    ("a" * 40, "a" * 30),
    ("héllo wörld", "hllowrld"),
    ("x.y_z-1", "x.y_z-1"),
])
def test_environment_name_as_upstream(tmp_path: Path, directory: str, expected: str) -> None:
    assert environment_name(tmp_path / directory) == expected


def test_environment_name_with_nothing_left_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="cannot derive") as caught:
        environment_name(tmp_path / "___")
    assert caught.value.hint is not None and "--name" in caught.value.hint


def test_project_dir_and_ssh_host(tmp_path: Path) -> None:
    assert project_dir_in_environment(tmp_path / "My Proj") == "/home/envd/My Proj"
    assert ssh_host("proj") == "proj.envd"


@pytest.mark.parametrize("text", ["/tmp", "/a:/b:/c", ":/b", "/a:", "relative"])
def test_volume_needs_exactly_one_colon_and_both_sides(text: str) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        parse_volume(text)


def test_volume_host_path_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="does not exist"):
        parse_volume(f"{tmp_path}/missing:/data")


def test_volume_container_path_must_be_absolute(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="absolute"):
        parse_volume(f"{tmp_path}:data")


def test_volume_expands_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    mount = parse_volume("~:/data")
    assert (mount.source, mount.target) == (str(tmp_path), "/data")


@pytest.mark.parametrize(("text", "expected"), [
    ("512M", 512 * 1024**2), ("2Gb", 2 * 1024**3), ("1.5g", int(1.5 * 1024**3)),
    ("1024", 1024), ("3kib", 3072),
])
def test_memory_sizes(text: str, expected: int) -> None:
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "-1G", "2X", "0"])
def test_memory_refuses_nonsense(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_memory(text)


@pytest.mark.parametrize(("text", "expected"), [
    ("all", GPURequest(count="all")),
    ("count=2", GPURequest(count=2)),
    ('"device=1,3"', GPURequest(count=None, device_ids=("1", "3"))),
    ("device=0", GPURequest(count=None, device_ids=("0",))),
])
def test_gpu_set(text: str, expected: GPURequest) -> None:
    assert parse_gpu_set(text) == expected


def test_gpu_set_refuses_nonsense() -> None:
    with pytest.raises(ValidationError, match="gpu-set"):
        parse_gpu_set("many")


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30), ("30m0s", 1800), ("1h30m", 5400), ("45", 45), ("1.5s", 1.5), ("500ms", 0.5),
])
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "10x", "s30", "0s"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValidationError):
        parse_duration(text)


def _options(tmp_path: Path, **kw: object) -> LaunchOptions:
    project = tmp_path / "proj"
    project.mkdir(exist_ok=True)
    return LaunchOptions(name="proj", image="proj:dev", project=project, **kw)  # type: ignore[arg-type]


def test_spec_from_envd_labels(tmp_path: Path) -> None:
    spec = build_spec(_options(tmp_path, host="0.0.0.0"), ENVD_LABELS)
    assert spec.working_dir == "/home/envd/proj"
    assert [(m.source, m.target) for m in spec.mounts] == [(str(tmp_path / "proj"),
                                                            "/home/envd/proj")]
    by_service = {p.service: p for p in spec.ports}
    assert by_service["ssh"].container_port == 2222 and by_service["ssh"].host_ip == "0.0.0.0"
    assert by_service["jupyter"].container_port == 8888
    assert by_service["jupyter"].host_ip == "127.0.0.1"  # only SSH follows --host
    assert by_service["web"].container_port == 8000 and by_service["web"].host_port is None
    assert spec.resources.shm_size_bytes == 2048 * 1024 * 1024
    assert spec.resources.gpus is None
    assert spec.labels["ai.tensorchord.envd.vendor"] == "envd"
    # no entrypoint in the build file: something must keep the environment up
    assert spec.entrypoint == KEEPALIVE


def test_spec_keeps_the_build_files_entrypoint(tmp_path: Path) -> None:
    labels = {**ENVD_LABELS, "ai.tensorchord.envd.graph.general":
              json.dumps({"Entrypoint": ["python3", "-m", "http.server"]})}
    spec = build_spec(_options(tmp_path), labels)
    assert spec.entrypoint is None and spec.command is None


def test_spec_fixed_expose_host_port(tmp_path: Path) -> None:
    labels = {**ENVD_LABELS, "ai.tensorchord.envd.graph.runtime": json.dumps(
        {"expose": [{"EnvdPort": 9000, "HostPort": 19000, "ServiceName": "api",
                     "ListeningAddr": "0.0.0.0"}]})}
    port = next(p for p in build_spec(_options(tmp_path), labels).ports if p.service == "api")
    assert (port.container_port, port.host_port, port.host_ip) == (9000, 19000, "0.0.0.0")


def test_foreign_image_gets_no_ssh_port(tmp_path: Path) -> None:
    assert build_spec(_options(tmp_path), {}).ports == ()


def test_resources_from_flags(tmp_path: Path) -> None:
    spec = build_spec(_options(tmp_path, cpus=1.5, memory="1G", shm_size_mb=64,
                               caps=("SYS_PTRACE",), gpus=2), {})
    res = spec.resources
    assert (res.cpus, res.memory_bytes, res.shm_size_bytes) == (1.5, 1024**3, 64 * 1024**2)
    assert res.gpus == GPURequest(count=2)
    assert spec.cap_add == ("SYS_PTRACE",)


def test_gpu_image_label_no_gpu_and_gpu_set(tmp_path: Path) -> None:
    labels = {**ENVD_LABELS, "ai.tensorchord.envd.gpu": "true"}
    assert build_spec(_options(tmp_path), labels).resources.gpus == GPURequest(count="all")
    assert build_spec(_options(tmp_path, no_gpu=True), labels).resources.gpus is None
    assert build_spec(_options(tmp_path, gpus=1, gpu_set="device=2"),
                      labels).resources.gpus == GPURequest(count=None, device_ids=("2",))


def test_cpus_and_cpu_set_conflict(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not both"):
        build_spec(_options(tmp_path, cpus=1.0, cpu_set="0-1"), {})


def test_bad_name_refused_before_any_runner(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="invalid environment name"):
        build_spec(LaunchOptions(name="bad name", image="x"), {})


def test_init_and_daemons_run_from_pid_1(tmp_path: Path) -> None:
    import subprocess

    labels = {**ENVD_LABELS, "ai.tensorchord.envd.graph.runtime": json.dumps({
        "init_script": [["echo first > init.txt", "echo 'sec ond' >> init.txt"]],
        "daemon": [["sh", "-c", "echo daemon-$0 > daemon.txt", "x y"]],
    })}
    spec = build_spec(_options(tmp_path), labels)
    assert spec.entrypoint is not None and spec.entrypoint[:2] == ("/bin/sh", "-c")
    script = spec.entrypoint[2]
    # run the script's init and daemon part for real (without its endless wait)
    part = script.rsplit("\nwhile", 1)[0] + "\nwait\n"
    subprocess.run(["/bin/sh", "-c", part], cwd=tmp_path, check=True, timeout=10)
    assert (tmp_path / "init.txt").read_text() == "first\nsec ond\n"
    assert (tmp_path / "daemon.txt").read_text() == "daemon-x y\n"


def test_runtime_mount_from_the_build_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    labels = {**ENVD_LABELS, "ai.tensorchord.envd.graph.general": json.dumps(
        {"Mount": [{"Source": str(data), "Destination": "/data"}]})}
    mounts = build_spec(_options(tmp_path), labels).mounts
    assert (str(data), "/data") in [(m.source, m.target) for m in mounts]
    labels["ai.tensorchord.envd.graph.general"] = json.dumps(
        {"Mount": [{"Source": str(tmp_path / "nope"), "Destination": "/data"}]})
    with pytest.raises(ValidationError, match=r"runtime\.mount host path"):
        build_spec(_options(tmp_path), labels)
