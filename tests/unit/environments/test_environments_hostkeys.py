"""Per-environment SSH host keys and envd's known_hosts file (real ssh-keygen, no daemon)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from envd_core.environments.hostkeys import HostKeys
from envd_core.environments.sshconfig import SSHEntry

OTHER = b"# kept\nother.example ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOther\n"


@pytest.fixture
def keys(tmp_path: Path) -> HostKeys:
    return HostKeys(tmp_path / "envd")


def test_a_key_is_made_once_kept_and_replaced_on_request(keys: HostKeys) -> None:
    first = keys.ensure("proj")
    assert first.public.startswith("ssh-ed25519 ")
    assert os.stat(first.path).st_mode & 0o777 == 0o600
    # the private key really is the public one's pair
    derived = subprocess.run(["ssh-keygen", "-y", "-f", str(first.path)], capture_output=True,
                             text=True, check=True).stdout.split()
    assert " ".join(derived[:2]) == first.public
    assert keys.ensure("proj") == first  # re-created environment: same key
    replaced = keys.ensure("proj", replace=True)  # up --force
    assert replaced.public != first.public
    assert keys.remove("proj") is True
    assert keys.get("proj") is None
    assert keys.remove("proj") is False


def test_known_hosts_keeps_other_lines_and_has_one_line_per_alias(keys: HostKeys) -> None:
    keys.config_dir.mkdir(parents=True)
    keys.known_hosts.write_bytes(OTHER)
    a = keys.ensure("a")
    keys.trust("a.envd", a)
    b = keys.ensure("a", replace=True)
    keys.trust("a.envd", b)
    data = keys.known_hosts.read_bytes()
    assert data.startswith(OTHER)
    assert data.count(b"a.envd ") == 1
    assert keys.known("a.envd") == b.public
    assert keys.forget("a.envd") is True
    assert keys.known_hosts.read_bytes() == OTHER
    assert keys.forget("a.envd") is False


def test_the_entry_checks_strictly_only_with_a_known_hosts_file() -> None:
    plain = SSHEntry(host="p.envd", hostname="127.0.0.1", port=2222, identity_file="/k")
    assert b"StrictHostKeyChecking no" in plain.render()
    assert b"UserKnownHostsFile /dev/null" in plain.render()
    strict = SSHEntry(host="p.envd", hostname="127.0.0.1", port=2222, identity_file="/k",
                      known_hosts="/c/known_hosts").render()
    assert b"StrictHostKeyChecking yes\n" in strict
    assert b'UserKnownHostsFile "/c/known_hosts"\n' in strict
    assert b"HostKeyAlias p.envd\n" in strict
    assert b"StrictHostKeyChecking no" not in strict and b"/dev/null" not in strict


def test_a_prepared_key_is_taken_over_or_discarded(keys: HostKeys) -> None:
    keys.prepare("early")
    made = keys.ensure("early")  # joins the thread's ssh-keygen
    assert keys.get("early") == made
    assert keys.ensure("early") == made
    keys.discard_prepared("early")  # taken over: kept
    assert keys.get("early") == made

    keys.prepare("unused")
    keys.discard_prepared("unused")  # a non-dev image: no key left behind
    assert keys.get("unused") is None
    assert not list(keys.key_path("unused").parent.glob(".unused*"))


def test_prepare_never_replaces_an_existing_key(keys: HostKeys) -> None:
    first = keys.ensure("kept")
    keys.prepare("kept")
    keys.discard_prepared("kept")  # nothing was prepared: the key stays
    assert keys.get("kept") == first
    keys.prepare("kept")
    assert keys.ensure("kept", replace=True).public != first.public  # up --force still does
