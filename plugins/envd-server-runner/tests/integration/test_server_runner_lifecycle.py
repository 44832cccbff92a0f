"""The envd-server runner against the double (real containers on the shared dockerd)."""

from __future__ import annotations

import io
import uuid
from typing import Any, ClassVar

import pytest
from envd_server_client.tokens import TokenStore
from envd_server_double import EnvdServerDouble
from envd_server_double.support import BUSYBOX, logged_in
from envd_server_runner import EnvdServerRunner

from envd_core.environment import EnvironmentSpec, EnvironmentStatus, PortMapping, PublishedPort
from envd_core.runner import EnvironmentNotFoundError, Runner, RunnerUnsupportedError
from envd_core.testing import RunnerContract


class TestEnvdServerRunnerLifecycle(RunnerContract):
    runner_cls = EnvdServerRunner
    valid_address = "http://127.0.0.1:8080"
    lifecycle_image = BUSYBOX
    lifecycle_timeout = 60.0
    _double: ClassVar[EnvdServerDouble | None] = None
    _tokens: ClassVar[TokenStore | None] = None

    @pytest.fixture(autouse=True)
    def _serve(self, double: EnvdServerDouble, tokens: TokenStore) -> None:
        type(self)._double, type(self)._tokens = double, tokens

    def make_runner(self) -> Runner:
        assert self._double is not None and self._tokens is not None
        return logged_in(self._double, self._tokens)

    def test_create_inspect_list(self, lifecycle: Any) -> None:
        # exec is not part of envd-server's API: check the environment variable in the real
        # container behind the environment instead of through runner.exec
        spec = lifecycle.spec(labels={"ai.tensorchord.envd.contract": "create"},
                              env={"ENVD_CONTRACT": "yes"})
        created = lifecycle.create(spec)
        assert created.name == spec.name and created.status is EnvironmentStatus.RUNNING
        assert created.runner == "envd-server" and created.id
        assert created.labels.get("ai.tensorchord.envd.contract") == "create"
        assert created.ssh is not None and created.ssh.port == 2222
        again = lifecycle.runner.inspect(spec.name)
        assert (again.name, again.id, again.image) == (created.name, created.id, created.image)
        listed = {env.name: env for env in lifecycle.runner.list_environments()}
        assert spec.name in listed and listed[spec.name].id == created.id
        assert self._double is not None
        container = self._double.docker.containers.get(self._double.container_name(spec.name))
        assert container.exec_run(["sh", "-c", "echo $ENVD_CONTRACT"]).output == b"yes\n"

    def test_exec_streams_and_exit_code(self, lifecycle: Any) -> None:
        spec = lifecycle.spec()
        lifecycle.create(spec)
        with pytest.raises(RunnerUnsupportedError) as info:
            lifecycle.runner.exec(spec.name, ["true"], stdout=io.BytesIO())
        assert str(info.value) == (f"runner `envd-server` cannot run commands through its API "
                                   f"in `{spec.name}`")
        assert info.value.hint == f"use SSH through the server's gateway: `ssh {spec.name}.envd`"

    def test_exec_env_workdir_user_stdin(self, lifecycle: Any) -> None:
        # envd-server has no exec route: commands go through its SSH gateway, whatever the options
        spec = lifecycle.spec()
        lifecycle.create(spec)
        with pytest.raises(RunnerUnsupportedError):
            lifecycle.runner.exec(spec.name, ["cat"], env={"A": "b"}, workdir="/tmp", user="1",
                                  stdin=io.BytesIO(b"x"), stdout=io.BytesIO())

    def test_ports_are_published_on_free_host_ports(self, lifecycle: Any) -> None:
        # envd-server publishes no host ports: the SSH entry forwards each one to the same port
        # on 127.0.0.1 through the gateway, the one endpoint the environment has
        spec = lifecycle.spec(ports=(PortMapping(8080, service="web"),))
        created = lifecycle.create(spec)
        assert created.ports == (PublishedPort(8080, 8080, "127.0.0.1", service="web"),)
        assert created.ssh is not None and created.ssh.port == 2222

    def test_stop_and_remove(self, lifecycle: Any) -> None:
        spec = lifecycle.spec()
        lifecycle.create(spec)
        with pytest.raises(RunnerUnsupportedError, match="has no stopped state"):
            lifecycle.runner.stop(spec.name, timeout=1)
        assert lifecycle.runner.inspect(spec.name).status is EnvironmentStatus.RUNNING
        lifecycle.runner.remove(spec.name)  # the server deletes a running environment
        with pytest.raises(EnvironmentNotFoundError):
            lifecycle.runner.inspect(spec.name)
        assert spec.name not in {env.name for env in lifecycle.runner.list_environments()}


def test_create_polls_until_running_and_sends_upstreams_wire(
        double: EnvdServerDouble, tokens: TokenStore) -> None:
    runner = logged_in(double, tokens)
    name = f"envd-h13-{uuid.uuid4().hex[:8]}"
    created = runner.create(EnvironmentSpec(name=name, image=BUSYBOX, command=("sleep", "60")))
    assert created.status is EnvironmentStatus.RUNNING
    calls = [(m, p) for m, p, _ in double.requests]
    # the double answers create with phase Pending: the runner polled GET until Running
    post = calls.index(("POST", f"/api/v1/users/{runner.credential().login_name}/environments"))
    assert calls[post + 1][0] == "GET" and calls[post + 1][1].endswith(f"/environments/{name}")
    # raw JWT, no Bearer prefix, on every authenticated request
    token = runner.credential().token
    assert {auth for _, path, auth in double.requests if "/users/" in path} == {token}
    images = runner.images()
    assert [i.tags for i in images] == [(BUSYBOX,)]
    assert runner.inspect_image(BUSYBOX).id.startswith("sha256:")
    runner.remove(name)
    leftovers = double.docker.containers.list(all=True,
                                              filters={"name": double.container_name(name)})
    assert not leftovers
