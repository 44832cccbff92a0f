"""The cause table (envd_core.pipeline.causes) and how a failed solve is explained.

The texts are what the real tools print (pip, apt, curl, dd, BuildKit v0.18 / v0.8), copied from
failed builds on this machine's buildkitd; the integration tests build each for real.
"""

from __future__ import annotations

import pytest

from envd_core.errors import BuildError
from envd_core.pipeline.causes import BUILTIN_CAUSES, Cause, diagnose, pip_index
from envd_core.pipeline.execute import explain_failure

PIP_TLS = [
    ("WARNING: Retrying (Retry(total=0, connect=None, read=None, redirect=None, status=None)) "
     "after connection broken by 'SSLError(SSLCertVerificationError(1, '[SSL: "
     "CERTIFICATE_VERIFY_FAILED] certificate verify failed: self-signed certificate in "
     "certificate chain (_ssl.c:992)'))': /simple/six/"),
    "ERROR: Could not find a version that satisfies the requirement six (from versions: none)",
    "ERROR: No matching distribution found for six",
]


@pytest.mark.parametrize(("stage", "texts", "cause", "reason"), [
    ("step", PIP_TLS, "tls-verify", "TLS certificate verification failed inside the step"),
    ("step", ["ERROR: No matching distribution found for nopkg==1.0"], "package-not-found",
     "pip found no package `nopkg==1.0` on PyPI (`https://pypi.org/simple`)"),
    ("step", ["Looking in indexes: https://pypi.corp.example/simple",
              "ERROR: No matching distribution found for nopkg"], "package-not-found",
     "pip found no package `nopkg` on the index `https://pypi.corp.example/simple`"),
    ("step", ["curl: (6) Could not resolve host: x.invalid"], "dns",
     "a host name (`x.invalid`) did not resolve on the builder"),
    ("step", ["socket.gaierror: [Errno -2] Name or service not known"], "dns",
     "a host name did not resolve on the builder"),
    ("step", ["dd: error writing '/fill': No space left on device"], "no-space",
     "the builder ran out of disk space"),
    ("export", ["failed to copy: write /var/lib/buildkit/x: no space left on device"], "no-space",
     "the builder ran out of disk space"),
    ("step", ["E: Unable to locate package jqq"], "apt-package-not-found",
     "apt found no package `jqq` in the image's apt sources"),
    ("step", ["E: Failed to fetch http://deb.debian.org/debian/pool/main/j/jq/jq.deb  503"],
     "apt-mirror", "an apt mirror failed (http://deb.debian.org/debian/pool/main/j/jq/jq.deb)"),
    ("step", ["W: Some index files failed to download. They have been ignored"], "apt-mirror",
     "an apt mirror failed"),
    ("pull", [("failed to load cache key: unexpected status from HEAD request to "
               "https://r.example:5443/v2/a/manifests/1: 401 Unauthorized")], "unauthorized",
     "the registry refused access (401)"),
    ("pull", ["failed to resolve source metadata for r.example/a:1: r.example/a:1: not found"],
     "image-not-found", "the base image `r.example/a:1` was not found"),
    ("push", ["failed to push r.example/a:1: x509: certificate signed by unknown authority"],
     "registry-tls", "the builder does not trust the registry's TLS certificate"),
    ("session", ["no active sessions"], "session", "the build's session with envd broke"),
])
def test_each_builtin_cause(stage: str, texts: list[str], cause: str, reason: str) -> None:
    found = diagnose(stage, texts)
    assert found is not None and (found.cause, found.reason) == (cause, reason)
    assert "\n" not in found.hint and "{" not in found.hint


def test_tls_wins_over_package_not_found() -> None:
    """pip says both when it cannot verify the index; the root cause is TLS."""
    found = diagnose("step", PIP_TLS)
    assert found is not None and found.cause == "tls-verify"
    assert "--ca-bundle" in found.hint and "ca-bundle=PATH" in found.hint


def test_stage_filters_rows() -> None:
    """A step's log mentioning a 401 is not a registry login problem of the build."""
    assert diagnose("step", ["HTTP 401 Unauthorized"]) is None
    assert diagnose("pull", ["dd: No space left on device"]) is not None
    assert diagnose("solve", ["something else entirely"]) is None


def test_facts_fill_the_templates() -> None:
    found = diagnose("push", ["401 Unauthorized"], facts={"registry": "r.example:5443"})
    assert found is not None
    assert found.reason == "the registry `r.example:5443` refused access (401)"
    assert "`docker login r.example:5443`" in found.hint


def test_a_cause_row_is_validated() -> None:
    with pytest.raises(ValueError, match="name and at least one pattern"):
        Cause(name="x", patterns=(), reason="r", hint="h")
    with pytest.raises(ValueError, match="unknown stages"):
        Cause(name="x", patterns=("y",), reason="r", hint="h", stages=("build",))


def test_extra_rows_go_first_and_unknown_placeholders_stay_visible() -> None:
    mine = Cause(name="corp-mirror", patterns=(r"mirror\.corp/(?P<path>\S+) 503",),
                 reason="the corp mirror is down ({path})", hint="see {status_page}",
                 stages=("step",))
    found = diagnose("step", ["E: Failed to fetch http://mirror.corp/debian 503"],
                     causes=(mine, *BUILTIN_CAUSES))
    assert found is not None and found.cause == "corp-mirror"
    assert found.reason == "the corp mirror is down (debian)" and found.hint == "see {status_page}"


def test_pip_index_default() -> None:
    assert pip_index([]) == "PyPI (`https://pypi.org/simple`)"


def _step_error(tail: list[str], status: int = 1) -> BuildError:
    return BuildError("step `pip install six` failed with exit code 1", stage="step",
                      step="pip install six", exit_status=status, log_tail=tuple(tail),
                      detail='process "/bin/sh -ec pip install six" did not complete '
                             "successfully: exit code: 1")


def test_explain_step_failure_puts_cause_in_message_and_fix_in_hint() -> None:
    err = explain_failure(_step_error(PIP_TLS))
    assert err.message == ("step `pip install six` failed with exit code 1: "
                           "TLS certificate verification failed inside the step")
    assert err.hint is not None and err.hint.startswith("a proxy or a private CA")
    assert err.cause == "tls-verify" and err.log_tail == tuple(PIP_TLS)
    data = err.to_dict()
    assert data["exit_code"] == 1 and data["step"] == "pip install six"
    assert data["log_tail"] == PIP_TLS and data["cause"] == "tls-verify"


def test_explain_unknown_step_failure_hints_at_the_log() -> None:
    err = explain_failure(_step_error(["boom"]))
    assert err.cause is None and err.message == "step `pip install six` failed with exit code 1"
    assert err.hint is not None and "--log-lines" in err.hint and "boom" not in err.hint


def test_explain_pull_401_names_image_and_registry() -> None:
    exc = BuildError("build failed at `docker-image://r.example:5443/a:1`: …", stage="pull",
                     step="docker-image://r.example:5443/a:1",
                     detail="failed to load cache key: unexpected status from HEAD request to "
                            "https://r.example:5443/v2/a/manifests/1: 401 Unauthorized")
    err = explain_failure(exc)
    assert err.message == ("cannot pull base image `r.example:5443/a:1`: the registry "
                           "`r.example:5443` refused access (401)")
    assert err.hint is not None and "`docker login r.example:5443`" in err.hint


def test_explain_push_uses_the_target_and_local_export_errors() -> None:
    exc = BuildError("build failed: failed to push", stage="push",
                     detail="failed to push: no basic auth credentials")
    err = explain_failure(exc, target="r.example/me/env:1", export_errors=["disk said no"])
    assert err.message == ("cannot push `r.example/me/env:1`: the registry `r.example` "
                           "refused access (401) (disk said no)")
    plain = explain_failure(BuildError("build failed: EOF", stage="export"),
                            export_errors=["cannot write `/x`: permission denied"])
    assert plain.message == "build failed: EOF (cannot write `/x`: permission denied)"
