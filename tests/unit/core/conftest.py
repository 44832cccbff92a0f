"""Fixtures for the core tests; the shared ones come from :mod:`envd_core.testing`.

The repository's root ``conftest.py`` registers ``envd_core.testing`` as a pytest plugin; the
``pytest_configure`` fallback registers it when these tests run where that is not (yet) done.
"""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin("envd_core.testing"):
        config.pluginmanager.import_plugin("envd_core.testing")
