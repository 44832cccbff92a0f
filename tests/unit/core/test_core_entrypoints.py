"""The start-up entry-point scanner agrees with importlib.metadata."""

from __future__ import annotations

import sys
from importlib import metadata
from pathlib import Path

import pytest

from envd_core._entrypoints import entry_points


@pytest.mark.parametrize("group", ["envd", "console_scripts", "pytest11"])
def test_same_entry_points_as_importlib_metadata(group: str) -> None:
    expected = sorted(
        (ep.name, ep.value, ep.dist.metadata["Name"] if ep.dist else None,
         ep.dist.version if ep.dist else None)
        for ep in metadata.entry_points(group=group)
    )
    # importlib keeps duplicates of a name from different distributions; we keep the first
    names = [e[0] for e in expected]
    if len(names) != len(set(names)):
        pytest.skip("duplicate entry-point names in this environment")
    assert [tuple(ep) for ep in entry_points(group)] == expected


def test_first_distribution_on_path_wins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for site, version in (("a", "2.0"), ("b", "1.0")):
        info = tmp_path / site / f"envd_dup-{version}.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(
            f"Metadata-Version: 2.1\nName: envd-dup\nVersion: {version}\n\nbody\n"
        )
        (info / "entry_points.txt").write_text(
            f"# comment\n[other]\nx = y\n\n[envd]\ndup = mod_{site}:attr.sub\n"
        )
    monkeypatch.setattr(sys, "path", [str(tmp_path / "a"), str(tmp_path / "b"), "/nonexistent"])
    (found,) = entry_points("envd")
    assert found.name == "dup"
    assert found.value == "mod_a:attr.sub"
    assert (found.distribution, found.version) == ("envd-dup", "2.0")


def test_load_resolves_module_and_attribute() -> None:
    from envd_core._entrypoints import EntryPoint

    ep = EntryPoint("x", "envd_core.errors:EnvdError", None, None)
    from envd_core.errors import EnvdError

    assert ep.load() is EnvdError
    assert EntryPoint("y", "envd_core.errors", None, None).load().__name__ == "envd_core.errors"
