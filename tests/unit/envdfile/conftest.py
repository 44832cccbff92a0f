"""Build files in these tests are evaluated in-process (on the big-stack thread, under the
guard): forking once per evaluation doubles this directory's run time. The forked path has its
own tests in test_envdfile_limits.py, which switch isolation back on."""

from __future__ import annotations

import pytest

from envd_core.envdfile.lang.limits import LIMITS_ENV


@pytest.fixture(autouse=True)
def _evaluate_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LIMITS_ENV, "isolate=false")
