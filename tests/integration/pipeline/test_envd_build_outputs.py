"""Each ``envd build --output`` type produces what it says; bad specs and files fail cleanly.

Builds run on the tcp buildkitd (it has every exporter). The default output (no ``--output``)
loads the image into the context runner's Docker as ``<dir>:dev``.
"""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from test_envd_build_support import (
    Envd,
    assert_one_error_line,
    check_image_config,
    check_image_contents,
    docker,
    marker,
    remove_images,
    write_environment,
)


@pytest.fixture
def envd(tmp_path: Path, docker_host: str, ca_bundle: str, buildkit_tcp: str) -> Envd:
    """The CLI with a private config directory whose current context is the tcp builder."""
    cli = Envd(tmp_path / "config", docker_host, ca_bundle)
    cli.run("context", "create", "--name", "tcp-e2e", "--builder", "tcp", "--builder-address",
            buildkit_tcp, "--use")
    return cli


@pytest.fixture
def environment(tmp_path: Path, registry: str) -> tuple[Path, str]:
    """A fresh build context and its marker."""
    mark = marker()
    return write_environment(tmp_path / f"env{mark}", mark=mark, registry=registry), mark


def _members(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return [m.name.removeprefix("./") for m in tar.getmembers()]


def test_output_docker_tarball_loads(envd: Envd, environment: tuple[Path, str], tmp_path: Path,
                                     docker_host: str) -> None:
    """``type=docker,dest=x.tar``: a tarball ``docker load`` accepts, with the image config."""
    context, mark = environment
    dest = tmp_path / "x.tar"
    image = f"e2e-docker-{mark}:v1"
    envd.build(context, "--tag", image, "--output", f"type=docker,dest={dest}")
    assert "manifest.json" in _members(dest)
    try:
        with dest.open("rb") as handle:
            loaded = docker("load", docker_host=docker_host, stdin=handle).stdout
        assert image in loaded, loaded
        check_image_contents(image, mark, docker_host=docker_host)
        check_image_config(image, mark, docker_host=docker_host)
    finally:
        remove_images(docker_host, image)


def test_output_oci_tarball_has_index(envd: Envd, environment: tuple[Path, str],
                                      tmp_path: Path) -> None:
    """``type=oci,dest=x.tar``: an OCI layout with index.json pointing at a manifest blob."""
    context, _ = environment
    dest = tmp_path / "x.tar"
    envd.build(context, "--output", f"type=oci,dest={dest}")
    members = _members(dest)
    assert "index.json" in members and "oci-layout" in members, members
    with tarfile.open(dest) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        digest = index["manifests"][0]["digest"].removeprefix("sha256:")
        assert f"blobs/sha256/{digest}" in members


def test_output_tar_is_rootfs(envd: Envd, environment: tuple[Path, str], tmp_path: Path) -> None:
    """``type=tar,dest=x.tar``: the root filesystem, with the copied file and the venv."""
    context, mark = environment
    dest = tmp_path / "x.tar"
    envd.build(context, "--output", f"type=tar,dest={dest}")
    members = set(_members(dest))
    assert "opt/e2e/marker.txt" in members
    assert "usr/bin/jq" in members
    assert "index.json" not in members
    with tarfile.open(dest) as tar:
        copied = tar.extractfile("opt/e2e/marker.txt")
        assert copied is not None and copied.read().decode() == f"copied {mark}\n"


def test_output_local_writes_files(envd: Envd, environment: tuple[Path, str],
                                   tmp_path: Path) -> None:
    """``type=local,dest=DIR``: the root filesystem as plain files in DIR."""
    context, mark = environment
    dest = tmp_path / "rootfs"
    # Bounded: a broken export has been seen to hang rather than fail.
    envd.build(context, "--output", f"type=local,dest={dest}", timeout=240)
    assert (dest / "opt/e2e/marker.txt").read_text() == f"copied {mark}\n"
    assert (dest / "usr/bin/jq").is_file()
    assert any((dest / "opt/envd/venv/lib").glob("python3*/site-packages/six.py"))
    # Hardlinks in the image (perl -> perl5.36.0 in Debian) arrive as one inode.
    perl = dest / "usr/bin/perl"
    if perl.exists():
        assert perl.stat().st_ino == (dest / "usr/bin").joinpath(
            next(p.name for p in (dest / "usr/bin").glob("perl5.*"))).stat().st_ino


def test_default_output_loads_into_docker_as_dir_dev(envd: Envd, tmp_path: Path, registry: str,
                                                     docker_host: str) -> None:
    """No ``--output``: the runner's Docker gets ``<directory name>:dev``."""
    mark = marker()
    context = write_environment(tmp_path / f"e2e-default-{mark}", mark=mark, registry=registry)
    image = f"e2e-default-{mark}:dev"
    try:
        proc = envd.build(context, "--format", "json")
        assert json.loads(proc.stdout)["tag"] == image
        check_image_contents(image, mark, docker_host=docker_host)
        check_image_config(image, mark, docker_host=docker_host)
    finally:
        remove_images(docker_host, image)


@pytest.mark.parametrize(("spec", "needle"), [
    ("type=", "type"),
    ("output=x", "output"),
    ("dest=x", "type"),
])
def test_bad_output_spec_is_one_line(envd: Envd, environment: tuple[Path, str],
                                     spec: str, needle: str) -> None:
    """A malformed ``--output`` fails before anything is built, naming the problem."""
    context, _ = environment
    proc = envd.build(context, "--output", spec, check=False)
    assert_one_error_line(proc, needle)
    assert "#1 " not in proc.stderr, proc.stderr  # nothing was solved


@pytest.mark.parametrize(("body", "needles"), [
    ('    base(image="x"\n', ("build.envd",)),
    ('    install.no_such_thing(name=["x"])\n', ("no_such_thing",)),
    ('    install.apt_packages(name="jq")\n', ("apt_packages",)),
    ('    install.python_packages(name=[1, 2])\n', ("python_packages",)),
], ids=["syntax-error", "unknown-function", "wrong-type-string", "wrong-type-int-list"])
def test_bad_build_file_is_one_line(envd: Envd, tmp_path: Path, body: str,
                                    needles: tuple[str, ...]) -> None:
    """Mistakes in build.envd: one ``envd: …`` line, exit 1 or 2, no traceback."""
    context = tmp_path / "bad"
    context.mkdir()
    (context / "build.envd").write_text("# syntax=v1\n\ndef build():\n" + body)
    proc = envd.build(context, "--output", f"type=local,dest={tmp_path / 'out'}", check=False)
    assert_one_error_line(proc, *needles)
    assert not (tmp_path / "out").exists()


def test_missing_build_file_is_one_line(envd: Envd, tmp_path: Path) -> None:
    """A directory without build.envd names the file it looked for."""
    context = tmp_path / "empty"
    context.mkdir()
    proc = envd.build(context, check=False)
    assert_one_error_line(proc, "build.envd")


def test_help_lists_output_flag() -> None:
    """The console script is the one under test and documents ``--output``."""
    from test_envd_build_support import ENVD

    proc = subprocess.run([ENVD, "build", "--help"], check=False, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "--output" in proc.stdout and "--ca-bundle" in proc.stdout


@pytest.fixture
def moby_envd(tmp_path: Path, docker_host: str, ca_bundle: str) -> Envd:
    """The CLI on the default context: moby-worker (dockerd's BuildKit v0.8)."""
    return Envd(tmp_path / "config-moby", docker_host, ca_bundle)


def test_moby_worker_tar_and_local_outputs(moby_envd: Envd, environment: tuple[Path, str],
                                           tmp_path: Path) -> None:
    """dockerd's BuildKit has `tar` and `local`: both give the root filesystem."""
    context, mark = environment
    tarball, directory = tmp_path / "m.tar", tmp_path / "m-rootfs"
    moby_envd.build(context, "--output", f"type=tar,dest={tarball}")
    with tarfile.open(tarball) as tar:
        copied = tar.extractfile("opt/e2e/marker.txt")
        assert copied is not None and copied.read().decode() == f"copied {mark}\n"
    moby_envd.build(context, "--output", f"type=local,dest={directory}", timeout=240)
    assert (directory / "opt/e2e/marker.txt").read_text() == f"copied {mark}\n"
    assert (directory / "usr/bin/jq").is_file()


@pytest.mark.parametrize("kind", ["oci", "docker"])
def test_moby_worker_refuses_exporters_it_lacks(moby_envd: Envd, environment: tuple[Path, str],
                                                tmp_path: Path, kind: str) -> None:
    """`oci`/`docker` files need buildkitd: one line naming what moby-worker supports."""
    context, _ = environment
    proc = moby_envd.build(context, "--output", f"type={kind},dest={tmp_path / 'x.tar'}",
                           check=False)
    assert_one_error_line(proc, "moby-worker", f"type={kind}", "local, moby, tar")
    assert not (tmp_path / "x.tar").exists()
