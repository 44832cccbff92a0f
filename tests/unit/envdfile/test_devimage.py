"""``base(dev=True)``: the SSH server, the supervisor, user envd, and how environments use them."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_envdfile_compile import compile_, execs, ops

from envd_core.envdfile.devimage import (
    AUTHORIZED_KEYS,
    DEFAULT_SSHD_IMAGE,
    SSHD_BIN,
    SUPERVISOR,
    supervisor_script,
)
from envd_core.envdfile.errors import UnsupportedBuildError
from envd_core.envdfile.graph import BuildGraph, JupyterConfig
from envd_core.environments.spec import LaunchOptions, build_spec

KEY = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 test"


def file_actions(compiled):
    return [a for o in ops(compiled) if o.WhichOneof("op") == "file" for a in o.file.actions]


def mkfiles(compiled):
    return {a.mkfile.path: a.mkfile for a in file_actions(compiled)
            if a.WhichOneof("action") == "mkfile"}


def test_dev_image_copies_sshd_from_the_configured_image(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENVD_SSHD_IMAGE", "mirror.corp/envd/sshd:v1.3.4")
    c = compile_(tmp_path, 'base(image="127.0.0.1:5000/debian:bookworm", dev=True)',
                 authorized_key=KEY, dev_owner=(1234, 2345))
    sources = [o.source.identifier for o in ops(c) if o.WhichOneof("op") == "source"]
    assert "docker-image://mirror.corp/envd/sshd:v1.3.4" in sources
    copies = [a.copy for a in file_actions(c) if a.WhichOneof("action") == "copy"]
    assert [(x.src, x.dest) for x in copies] == [("/usr/bin/envd-sshd", SSHD_BIN)]
    key = mkfiles(c)[AUTHORIZED_KEYS]
    assert key.data == (KEY + " envd\n").encode() and key.mode == 0o600
    assert (key.owner.user.byID, key.owner.group.byID) == (1234, 2345)
    user_step = execs(c)[-1].meta.args[-1]
    assert "envd:x:1234:2345:envd:/home/envd:/bin/sh" in user_step
    cfg = c.image_config["config"]
    assert cfg["Entrypoint"] == [SUPERVISOR] and cfg["User"] == "1234:2345"
    assert "HOME=/home/envd" in cfg["Env"]
    assert f"ENVD_WORKDIR={cfg['WorkingDir']}" in cfg["Env"]
    assert cfg["ExposedPorts"] == {"2222/tcp": {}}


def test_the_default_sshd_image_is_upstreams(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENVD_SSHD_IMAGE", raising=False)
    c = compile_(tmp_path, "base(dev=True)", authorized_key=KEY)
    sources = [o.source.identifier for o in ops(c) if o.WhichOneof("op") == "source"]
    assert f"docker-image://{DEFAULT_SSHD_IMAGE}" in sources


def test_config_owner_names_the_envd_user(tmp_path: Path) -> None:
    c = compile_(tmp_path, "base(dev=True)\nconfig.owner(uid=1001, gid=1002)",
                 authorized_key=KEY, dev_owner=(0, 0))
    assert c.image_config["config"]["User"] == "1001:1002"


def test_non_dev_images_stay_as_they_were(tmp_path: Path) -> None:
    c = compile_(tmp_path, 'base(image="127.0.0.1:5000/debian:bookworm", dev=False)',
                 authorized_key=KEY)
    assert SUPERVISOR not in mkfiles(c) and "Entrypoint" not in c.image_config["config"]


def test_entrypoint_and_dev_are_refused_like_upstream(tmp_path: Path) -> None:
    with pytest.raises(UnsupportedBuildError, match=r"runtime\.init or runtime\.daemon"):
        compile_(tmp_path, 'base(dev=True)\nconfig.entrypoint(["sleep", "1"])',
                 authorized_key=KEY)


def test_supervisor_is_posix_sh_and_runs_every_service() -> None:
    g = BuildGraph(dev=True, shell="zsh", jupyter=JupyterConfig(token="t0k"),
                   rstudio_server=True)
    g.runtime.init = [["echo a", "echo b"]]
    g.runtime.daemon = [["python3", "-m", "http.server", "8000"]]
    text = supervisor_script(g, uid=0)
    # a syntax error would keep every dev environment from starting
    subprocess.run(["sh", "-n"], input=text, text=True, check=True)
    assert f"supervise sshd {SSHD_BIN} --port 2222" in text
    assert "supervise daemon_0 python3 -m http.server 8000" in text
    assert "--ServerApp.token=t0k" in text and "--allow-root" in text
    assert "sh -c 'echo a\necho b'" in text
    assert "rserver" in text and "is not in this image" in text
    assert text.index("init_0") < text.index("supervise daemon_0")  # daemons after init
    assert "--allow-root" not in supervisor_script(g, uid=1000)


def test_the_supervisor_restarts_a_service_and_stops_on_term(tmp_path: Path) -> None:
    # run the real script with sh, a fake sshd that counts its starts and exits at once
    g = BuildGraph(dev=True, shell="sh")
    text = supervisor_script(g, uid=0)
    counter = tmp_path / "starts"
    fake = tmp_path / "envd-sshd"
    fake.write_text(f"#!/bin/sh\necho started >> {counter}\nexit 3\n")
    fake.chmod(0o755)
    text = text.replace(SSHD_BIN, str(fake)).replace("/var/log/envd", str(tmp_path / "log"))
    text = text.replace("sleep 2", "sleep 0.2")
    proc = subprocess.Popen(["sh", "-c", text], stdout=subprocess.PIPE, text=True,
                            start_new_session=True)
    import time

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if counter.exists() and len(counter.read_text().split()) >= 3:
            break
        time.sleep(0.1)
    proc.terminate()
    out, _ = proc.communicate(timeout=20)
    assert len(counter.read_text().split()) >= 3
    assert "sshd exited with code 3; restarting" in out
    assert proc.returncode == 0


def test_a_dev_environment_keeps_its_image_entrypoint(tmp_path: Path) -> None:
    c = compile_(tmp_path, "base(dev=True)", authorized_key=KEY)
    labels = c.image_config["config"]["Labels"]
    spec = build_spec(LaunchOptions(name="p", image="p:dev"), labels)
    assert spec.entrypoint is None  # the supervisor from the image runs
    assert [p.container_port for p in spec.ports] == [2222]
    plain = compile_(tmp_path, "base(dev=False)").image_config["config"]["Labels"]
    assert build_spec(LaunchOptions(name="p", image="p:dev"), plain).entrypoint is not None
