"""Fixtures for core tests that run beside the real upstream envd."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture
def envd_script() -> str:
    """The installed ``envd`` console script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("envd")
    if not script.exists():
        pytest.skip("the envd console script is not installed (pip install -e .)")
    return os.fspath(script)
