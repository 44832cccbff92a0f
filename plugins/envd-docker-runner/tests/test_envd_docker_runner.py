"""Unit tests of the docker runner type: addresses, the spec → Docker mapping, the contract."""

from __future__ import annotations

import pytest
from envd_docker_runner import DockerRunner
from envd_docker_runner.mapping import (
    LABEL_NAME,
    LABEL_SSH_PORT,
    container_config,
    host_config,
    to_environment,
)

from envd_core.environment import (
    DEFAULT_GPU_CAPABILITIES,
    EnvironmentSpec,
    EnvironmentStatus,
    GPURequest,
    Mount,
    PortMapping,
    Resources,
)
from envd_core.errors import RunnerError, ValidationError
from envd_core.testing import RunnerContract


def test_address_forms() -> None:
    assert DockerRunner.normalize_address("") is None
    assert DockerRunner.normalize_address("unix:///var/run/docker.sock") == "unix:///var/run/docker.sock"
    assert DockerRunner.normalize_address("tcp://127.0.0.1:2375") == "tcp://127.0.0.1:2375"
    with pytest.raises(ValidationError):
        DockerRunner.normalize_address("http://x")


def test_unreachable_daemon_is_one_clear_error(tmp_path: object) -> None:
    runner = DockerRunner(f"unix://{tmp_path}/missing.sock")
    with pytest.raises(RunnerError) as info:
        runner.list_environments()
    message = str(info.value)
    assert message == (f"cannot reach the Docker daemon at `unix://{tmp_path}/missing.sock`: "
                       "No such file or directory")
    assert info.value.hint == "start dockerd or set DOCKER_HOST"
    status = runner.status(timeout=1)
    assert status.reachable is False and status.error == message


def test_docker_host_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", "tcp://127.0.0.1:1")
    assert DockerRunner(None).host == "tcp://127.0.0.1:1"
    assert DockerRunner("unix:///x.sock").host == "unix:///x.sock"  # the address wins
    with pytest.raises(RunnerError, match=r"`tcp://127\.0\.0\.1:1`: Connection refused"):
        DockerRunner(None).inspect("anything")


def _docker_host_config(spec: EnvironmentSpec) -> dict[str, object]:
    """The HostConfig JSON the SDK would send for ``spec`` to API 1.41 (no daemon needed)."""
    from docker.types import HostConfig

    return dict(HostConfig(version="1.41", **host_config(spec)))


def test_full_spec_mapping(tmp_path: object) -> None:
    spec = EnvironmentSpec(
        name="proj", image="proj:dev", command=("sleep", "1"), entrypoint=(),
        working_dir="/home/envd/proj", env={"A": "1"},
        mounts=(Mount("/src", "/home/envd/proj"), Mount("/data", "/data", read_only=True)),
        ports=(PortMapping(2222, service="ssh"), PortMapping(8888, 9999, service="jupyter"),
               PortMapping(53, protocol="udp", host_ip="0.0.0.0")),
        labels={"team": "ml"},
        resources=Resources(cpus=1.5, memory_bytes=2 << 30, shm_size_bytes=2048 << 20,
                            gpus=GPURequest(count=2)),
        cap_add=("SYS_PTRACE",), user="envd",
    )
    config = container_config(spec)
    assert config["image"] == "proj:dev" and config["name"] == "proj"
    assert config["command"] == ["sleep", "1"] and config["entrypoint"] == []
    assert config["working_dir"] == "/home/envd/proj" and config["user"] == "envd"
    assert config["environment"] == {"A": "1"}
    assert config["labels"] == {
        "team": "ml", LABEL_NAME: "proj",
        "ai.tensorchord.envd.service.ssh": "2222/tcp",
        "ai.tensorchord.envd.service.jupyter": "8888/tcp",
        # a fixed host port is known at creation: its address goes into upstream's label
        "ai.tensorchord.envd.jupyter.address": "http://127.0.0.1:9999",
    }
    assert config["ports"] == [(2222, "tcp"), (8888, "tcp"), (53, "udp")]
    hc = _docker_host_config(spec)
    assert hc["PortBindings"] == {
        "2222/tcp": [{"HostIp": "127.0.0.1", "HostPort": ""}],
        "8888/tcp": [{"HostIp": "127.0.0.1", "HostPort": "9999"}],
        "53/udp": [{"HostIp": "0.0.0.0", "HostPort": ""}],
    }
    assert hc["RestartPolicy"] == {"Name": "always"}
    assert hc["NanoCpus"] == 1_500_000_000
    assert hc["Memory"] == 2 << 30 and hc["ShmSize"] == 2048 << 20
    assert hc["CapAdd"] == ["SYS_PTRACE"]
    assert hc["Mounts"] == [
        {"Target": "/home/envd/proj", "Source": "/src", "Type": "bind", "ReadOnly": False},
        {"Target": "/data", "Source": "/data", "Type": "bind", "ReadOnly": True},
    ]
    assert hc["DeviceRequests"] == [{
        "Driver": "nvidia", "Count": 2, "DeviceIDs": [],
        "Capabilities": [list(DEFAULT_GPU_CAPABILITIES)], "Options": {},
    }]


def test_gpu_all_and_device_ids() -> None:
    base = {"name": "g", "image": "i"}
    every = _docker_host_config(EnvironmentSpec(**base, resources=Resources(gpus=GPURequest())))
    assert every["DeviceRequests"][0]["Count"] == -1  # type: ignore[index]
    ids = _docker_host_config(EnvironmentSpec(
        **base, resources=Resources(gpus=GPURequest(count=None, device_ids=("0", "2")))))
    assert ids["DeviceRequests"][0]["DeviceIDs"] == ["0", "2"]  # type: ignore[index]


def test_minimal_spec_keeps_image_defaults() -> None:
    spec = EnvironmentSpec(name="m", image="busybox")
    config = container_config(spec)
    for key in ("command", "entrypoint", "working_dir", "user"):
        assert key not in config
    hc = _docker_host_config(spec)
    for key in ("NanoCpus", "Memory", "ShmSize", "DeviceRequests", "Mounts", "CapAdd"):
        assert key not in hc
    assert "CpusetCpus" not in hc and hc["PortBindings"] == {}


def test_fixed_ssh_port_gets_upstreams_label() -> None:
    spec = EnvironmentSpec(name="s", image="i", ports=(PortMapping(2222, 40022),))
    assert container_config(spec)["labels"][LABEL_SSH_PORT] == "40022"


def test_spec_validation_is_one_clear_line() -> None:
    with pytest.raises(ValidationError, match="invalid environment name `-x`"):
        EnvironmentSpec(name="-x", image="i")
    with pytest.raises(ValidationError, match="either cpus or a cpu set"):
        Resources(cpus=1, cpu_set="0-1")
    with pytest.raises(ValidationError, match="container port `80/tcp` is published twice"):
        EnvironmentSpec(name="p", image="i", ports=(PortMapping(80), PortMapping(80, 81)))
    with pytest.raises(ValidationError, match="absolute"):
        Mount("relative", "/x")
    with pytest.raises(ValidationError, match="65535"):
        PortMapping(70000)


def test_inspect_json_to_environment() -> None:
    attrs = {
        "Id": "abc123", "Name": "/proj", "Created": "2026-12-01T01:02:03.123456789Z",
        "State": {"Status": "running"},
        "Config": {"Image": "proj:dev", "Labels": {LABEL_NAME: "proj",
                                                  "ai.tensorchord.envd.service.ssh": "2222/tcp"}},
        "NetworkSettings": {"Ports": {
            "2222/tcp": [{"HostIp": "127.0.0.1", "HostPort": "49153"}],
            "8080/tcp": [
                {"HostIp": "0.0.0.0", "HostPort": "8080"},
                {"HostIp": "::", "HostPort": "8080"},
            ],
            "9000/tcp": None,
        }},
    }
    env = to_environment(attrs, "docker")
    assert (env.name, env.id, env.image, env.runner) == ("proj", "abc123", "proj:dev", "docker")
    assert env.status is EnvironmentStatus.RUNNING
    assert env.created is not None and env.created.isoformat() == "2026-12-01T01:02:03.123456+00:00"
    assert [(p.container_port, p.host_port, p.host_ip, p.service) for p in env.ports] == [
        (2222, 49153, "127.0.0.1", "ssh"), (8080, 8080, "0.0.0.0", None)]
    assert env.ssh is not None and (env.ssh.host, env.ssh.port) == ("127.0.0.1", 49153)
    assert env.to_json()["status"] == "running"
    assert to_environment({**attrs, "State": {"Status": "removing"}}, "docker").status is (
        EnvironmentStatus.UNKNOWN)


class TestDockerRunnerContract(RunnerContract):
    runner_cls = DockerRunner
    valid_address = "unix:///var/run/docker.sock"


def test_free_ports_are_picked_before_creation_so_labels_can_name_them() -> None:
    from envd_docker_runner.mapping import LABEL_SSH_PORT, labels_for, with_free_ports

    from envd_core.environment import EnvironmentSpec, PortMapping

    spec = EnvironmentSpec(name="p", image="i", ports=(
        PortMapping(2222, None, "127.0.0.1", service="ssh"),
        PortMapping(8888, None, "127.0.0.1", service="jupyter"),
        PortMapping(8000, 18000, "127.0.0.1", service="web"),
    ))
    assert LABEL_SSH_PORT not in labels_for(spec)
    chosen = with_free_ports(spec)
    ssh, jupyter, web = chosen.ports
    assert ssh.host_port and jupyter.host_port and ssh.host_port != jupyter.host_port
    assert web.host_port == 18000  # a port the user fixed stays
    labels = labels_for(chosen)
    assert labels[LABEL_SSH_PORT] == str(ssh.host_port)
    assert labels["ai.tensorchord.envd.jupyter.address"] == f"http://127.0.0.1:{jupyter.host_port}"


def test_a_host_key_is_named_for_envd_sshd_only_when_given() -> None:
    from envd_docker_runner.mapping import HOST_KEY_ENV, HOST_KEY_PATH

    plain = EnvironmentSpec(name="k", image="img", env={"A": "1"})
    assert container_config(plain)["environment"] == {"A": "1"}
    keyed = EnvironmentSpec(name="k", image="img", env={"A": "1"}, host_key="/c/hostkeys/k")
    assert container_config(keyed)["environment"] == {"A": "1", HOST_KEY_ENV: HOST_KEY_PATH}


@pytest.mark.parametrize(("user", "owner"), [
    ("", (0, 0)), ("0", (0, 0)), ("1000:1001", (1000, 1001)), ("1000", (1000, 0)),
    ("envd", None), ("1000:staff", None),
])
def test_the_host_key_owner_comes_from_a_numeric_user(user: str,
                                                      owner: tuple[int, int] | None) -> None:
    from envd_docker_runner.runner import _numeric_owner

    assert _numeric_owner(user) == owner


def test_light_listing_constants_are_the_runners() -> None:
    import envd_docker_listing as listing
    from envd_docker_client.client import DEFAULT_HOST, docker_host
    from envd_docker_runner import mapping

    assert (listing.LABEL_NAME, listing.LABEL_SERVICE_PREFIX, listing.SSH_PORT) == (
        mapping.LABEL_NAME, mapping.LABEL_SERVICE_PREFIX, mapping.SSH_PORT)
    assert listing.DEFAULT_HOST == DEFAULT_HOST
    for address in (None, "", "tcp://h:1"):
        assert listing.docker_host(address) == docker_host(address)
    from urllib.parse import unquote

    assert unquote(listing.QUERY) == 'all=1&filters={"label":["ai.tensorchord.envd.name"]}'
    assert DockerRunner.lister == "envd_docker_listing:list_light"


def test_light_listing_decodes_a_container_summary() -> None:
    from envd_docker_listing import listed

    from envd_core.listing import ListedPort

    summary = {
        "Id": "f" * 64, "Names": ["/other/alias", "/dev-env"], "Image": "img:dev",
        "State": "running", "Created": 1764547200,
        "Labels": {"ai.tensorchord.envd.name": "dev-env",
                   "ai.tensorchord.envd.service.jupyter": "8888/tcp"},
        "Ports": [
            {"IP": "127.0.0.1", "PrivatePort": 8888, "PublicPort": 40001, "Type": "tcp"},
            {"PrivatePort": 9000, "Type": "tcp"},  # exposed, not published
            {"IP": "::", "PrivatePort": 2222, "PublicPort": 40000, "Type": "tcp"},
            {"IP": "0.0.0.0", "PrivatePort": 2222, "PublicPort": 40000, "Type": "tcp"},
        ],
    }
    env = listed(summary)
    assert (env.name, env.image, env.status, env.id, env.created) == (
        "dev-env", "img:dev", "running", "f" * 64, 1764547200.0)
    assert env.ports == (ListedPort(2222, 40000, "0.0.0.0", "tcp", None),
                         ListedPort(8888, 40001, "127.0.0.1", "tcp", "jupyter"))
    assert env.ssh == ("0.0.0.0", 40000)
    assert listed({"Names": ["/x"], "State": "removing"}).status == "unknown"
