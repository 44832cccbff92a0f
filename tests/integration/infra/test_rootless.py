"""The rootless prerequisites: the unprivileged user can enter a user namespace via rootlesskit."""

from __future__ import annotations

from typing import Any

import pytest
from infra_helpers import sh

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("net", ["host", "slirp4netns"])
def test_rootlesskit_maps_the_user_to_root(infra: dict[str, Any], net: str) -> None:
    inner = "id -u; test -e /sys/class/net/tap0 && echo tap || echo no-tap"
    cmd = (f"cd ~ && rootlesskit --net={net} --disable-host-loopback --copy-up=/etc "
           f"sh -c '{inner}'")
    if net == "host":
        cmd = cmd.replace(" --disable-host-loopback", "")
    out = sh("su", infra["ROOTLESS_USER"], "-s", "/bin/sh", "-c", cmd, timeout=60).stdout
    assert out.split() == ["0", "tap" if net == "slirp4netns" else "no-tap"]
