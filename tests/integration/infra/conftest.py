"""A fresh copy of the ``envd_infra`` package (scripts/envd_infra) per test, in a scratch state dir.

``envd_infra.config`` reads ``ENVD_INFRA_DIR`` once, at import, so each test imports the package
anew with that variable pointing into ``tmp_path``, and forgets it afterwards.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SCRIPTS = Path(__file__).resolve().parents[3] / "scripts"
MODULES = ("config", "shell", "processes", "installs", "certs", "registries", "buildkitd",
           "images", "sshd", "upstream", "report", "cli")


def _forget() -> None:
    for name in [n for n in sys.modules if n == "envd_infra" or n.startswith("envd_infra.")]:
        del sys.modules[name]


@pytest.fixture
def envd_infra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    """The package with every module imported (``envd_infra.processes`` etc.), state in tmp."""
    monkeypatch.setenv("ENVD_INFRA_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("ENVD_INFRA_PORT_OFFSET", raising=False)
    monkeypatch.syspath_prepend(str(SCRIPTS))
    _forget()
    pkg = importlib.import_module("envd_infra")
    for name in MODULES:
        importlib.import_module(f"envd_infra.{name}")
    try:
        yield pkg
    finally:
        for rec in (tmp_path / "state" / "pids").glob("*.json"):
            pkg.processes.stop(rec.stem, grace=1)
        _forget()
