"""Fixtures for the core tests; the shared ones come from :mod:`envd_core.testing`.

The repository's root ``conftest.py`` registers ``envd_core.testing`` as a pytest plugin; the
``pytest_configure`` fallback registers it when these tests run where that is not (yet) done.
"""

from __future__ import annotations

import os
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("envd_core.testing"):
        config.pluginmanager.import_plugin("envd_core.testing")


@pytest.fixture
def entry_point_site(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., Path]]:
    """``add(ep_name, source)`` writes a module and a dist-info declaring it in group ``envd``.

    The directory is put on ``sys.path`` (and returned, for ``PYTHONPATH`` of subprocesses), so
    :mod:`importlib.metadata` finds the entry point exactly as it finds an installed package.
    """
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    modules: list[str] = []

    def add(ep_name: str, source: str, *, dist: str | None = None) -> Path:
        module = f"envd_testplugin_{ep_name.replace('-', '_')}_{uuid.uuid4().hex[:8]}"
        modules.append(module)
        (site / f"{module}.py").write_text(textwrap.dedent(source))
        dist_name = dist or f"envd-test-{ep_name}"
        info = site / f"{dist_name.replace('-', '_')}-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist_name}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[envd]\n{ep_name} = {module}\n")
        return site

    yield add
    for module in modules:
        sys.modules.pop(module, None)


@pytest.fixture
def envd_script() -> str:
    """The installed ``envd`` console script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("envd")
    if not script.exists():
        pytest.skip("the envd console script is not installed (pip install -e .)")
    return os.fspath(script)
