"""The ``envd_build_failure_causes`` hook: plugins' rows first, then the built-in table."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from envd_core import hookimpl
from envd_core.errors import PluginError
from envd_core.pipeline.causes import BUILTIN_CAUSES, Cause, diagnose


def _plugin(rows: object) -> object:
    return SimpleNamespace(envd_build_failure_causes=hookimpl(lambda: rows))


def test_hook_envd_build_failure_causes_rows_come_first(plugins, register_plugin):
    assert plugins.failure_causes() == BUILTIN_CAUSES
    mine = Cause(name="corp-index", patterns=(r"No matching distribution found for (?P<p>\S+)",),
                 reason="`{p}` is not on the corp index", hint="ask #python-infra",
                 stages=("step",))
    register_plugin(_plugin([mine]), name="corp")
    causes = plugins.failure_causes()
    assert causes == (mine, *BUILTIN_CAUSES)
    found = diagnose("step", ["ERROR: No matching distribution found for x"], causes=causes)
    assert found is not None and found.cause == "corp-index" and found.hint == "ask #python-infra"


@pytest.mark.parametrize("bad", ["not-a-list", [object()], 3])
def test_hook_envd_build_failure_causes_checked(plugins, register_plugin, bad):
    register_plugin(_plugin(bad), name="broken")
    with pytest.raises(PluginError, match="plugin `broken`"):
        plugins.failure_causes()
