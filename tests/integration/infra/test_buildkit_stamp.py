"""The buildkitd/buildctl build is version-stamped, and an unstamped one is rebuilt exactly once.

No Go here: ``go_install`` is replaced by a fake that writes small scripts answering
``--version`` the way the real binaries do, and records what it was asked to build.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

STAMPED = "github.com/moby/buildkit v0.18.2 e4da654b1251f91e914fab18eba33743aefd7080"
UNSTAMPED = "github.com/moby/buildkit v0.0.0+unknown "


def _fake_binary(path: Path, name: str, version: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\n[ "$1" = --version ] && echo "{name} {version}"\n')
    path.chmod(0o755)


@pytest.fixture
def go_calls(envd_infra: ModuleType, monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Every fake ``go install``: its package list and flags; it writes stamped binaries."""
    calls: list[list[str]] = []

    def fake_go_install(gobin: Path, pkgs: list[str], log: Path, timeout: float,
                        flags: list[str] | None = None) -> None:
        calls.append([*pkgs, *(flags or [])])
        ldflags = (flags or ["", ""])[1]
        version = STAMPED if "version.Version=v0.18.2" in ldflags else UNSTAMPED
        for pkg in pkgs:
            tool = pkg.split("/")[-1].split("@")[0]
            _fake_binary(gobin / tool, tool, version)

    monkeypatch.setattr(envd_infra.installs, "go_install", fake_go_install)
    return calls


def test_ldflags_stamp_version_and_revision(envd_infra: ModuleType) -> None:
    flags = envd_infra.installs.buildkit_ldflags()
    assert flags[0] == "-ldflags"
    assert "-X github.com/moby/buildkit/version.Version=v0.18.2" in flags[1]
    assert f"-X github.com/moby/buildkit/version.Revision={STAMPED.split()[2]}" in flags[1]


def test_fresh_state_dir_builds_stamped_binaries(envd_infra: ModuleType,
                                                 go_calls: list[list[str]]) -> None:
    installs, bin_dir = envd_infra.installs, envd_infra.config.BIN
    assert installs.ensure_buildkit_binaries() == "installed"
    assert len(go_calls) == 1
    assert "github.com/moby/buildkit/cmd/buildkitd@v0.18.2" in go_calls[0]
    assert installs.reported_version(bin_dir / "buildkitd") == f"buildkitd {STAMPED}"
    assert installs.is_stamped(bin_dir / "buildctl")


def test_unstamped_binaries_are_rebuilt_once(envd_infra: ModuleType,
                                             go_calls: list[list[str]]) -> None:
    installs, bin_dir = envd_infra.installs, envd_infra.config.BIN
    for tool in ("buildkitd", "buildctl"):
        _fake_binary(bin_dir / tool, tool, UNSTAMPED)
    assert not installs.is_stamped(bin_dir / "buildkitd")
    assert installs.ensure_buildkit_binaries().startswith("rebuilt")
    assert installs.is_stamped(bin_dir / "buildkitd")
    # A warm second run finds them stamped and builds nothing.
    assert installs.ensure_buildkit_binaries() == "present"
    assert len(go_calls) == 1


def test_stamped_binaries_are_left_alone(envd_infra: ModuleType,
                                         go_calls: list[list[str]]) -> None:
    bin_dir = envd_infra.config.BIN
    for tool in ("buildkitd", "buildctl"):
        _fake_binary(bin_dir / tool, tool, STAMPED)
    assert envd_infra.installs.ensure_buildkit_binaries() == "present"
    assert go_calls == []


def test_a_build_that_still_reports_unknown_fails_loudly(envd_infra: ModuleType,
                                                         monkeypatch: pytest.MonkeyPatch,
                                                         go_calls: list[list[str]]) -> None:
    # Should the ldflags stop reaching the linker (a renamed variable upstream), `up` must say
    # so instead of installing binaries that report v0.0.0+unknown.
    monkeypatch.setattr(envd_infra.installs, "buildkit_ldflags", lambda: ["-ldflags", ""])
    with pytest.raises(envd_infra.shell.InfraError, match=r"v0\.0\.0"):
        envd_infra.installs.ensure_buildkit_binaries()
    assert not (envd_infra.config.BIN / "buildkitd").exists()


def test_buildkit_image_recipe_follows_the_revision(envd_infra: ModuleType,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # The buildkit image copies the binaries in: a new stamp must rebuild it.
    images = envd_infra.images
    before = images.recipe_id("buildkit", ['ENTRYPOINT ["buildkitd"]'])
    monkeypatch.setattr(images, "BUILDKIT_REVISION", "0" * 40)
    assert images.recipe_id("buildkit", ['ENTRYPOINT ["buildkitd"]']) != before
