"""``envd resident status|stop``: the background process that keeps envd loaded.

See docs/resident.md. Both commands talk to the server of *this* interpreter and envd (the
socket named by the key); ``stop --all`` stops every server in the socket directory (other
venvs' and envd versions' too).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import click

from envd_core.errors import ValidationError


def _where() -> tuple[str, str, str]:
    from envd_core.resident.client import endpoint

    where = endpoint(os.environ)
    if where is None:
        raise ValidationError(
            "this envd cannot use a resident process: its sys.path has a relative entry or "
            "the socket path is longer than 107 bytes",
            hint="set ENVD_RESIDENT_DIR to a short directory")
    return where


@click.group()
def resident() -> None:
    """The resident process that keeps envd's modules loaded (docs/resident.md)."""


@resident.command()
@click.option("--format", "-f", "fmt", type=click.Choice(["table", "json"]), default="table",
              show_default=True)
def status(fmt: str) -> None:
    """Show whether a resident process serves this envd, and what it did."""
    from envd_core.resident import wire
    from envd_core.resident.client import ask

    directory, sock, key = _where()
    reply = ask(sock, "status")
    state: dict[str, Any] = reply.get("status", {}) if reply else {}
    doc: dict[str, Any] = {
        "running": bool(state), "socket": sock, "key": key,
        "enabled": not wire.disabled(os.environ),
        "directory_problem": wire.check_dir(directory, create=False)
        if os.path.exists(directory) else None,
        **{k: v for k, v in state.items() if k not in ("socket", "key")},
    }
    from envd_core.resident.helpers import registered

    doc["helpers"] = registered(directory)  # plugins' processes (resident/helpers.py)
    if fmt == "json":
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    for helper in doc["helpers"]:
        click.echo(f"helper: {helper.get('kind')} pid {helper.get('pid')} for "
                   f"{helper.get('address', '?')} ({helper.get('socket')})")
    if not doc["enabled"]:
        click.echo("resident: disabled (ENVD_RESIDENT=0): every command runs in its own process")
    if not state:
        click.echo(f"resident: not running (socket {sock}); the next build, up --detach or "
                   "other non-interactive command starts it")
        if doc["directory_problem"]:
            click.echo(f"resident: cannot run: {doc['directory_problem']}")
        return
    uptime = time.strftime("%H:%M:%S", time.gmtime(state["uptime"]))
    rows = [("pid", state["pid"]), ("socket", sock), ("key", key), ("uptime", uptime),
            ("commands served", state["served"]), ("running now", state["commands_running"]),
            ("idle timeout", f"{state['idle_timeout']:.0f} s"),
            ("modules loaded", state["modules"]), ("files watched", state["watched_files"])]
    for name, value in rows:
        click.echo(f"{name + ':':17}{value}")


@resident.command()
@click.option("--all", "every", is_flag=True,
              help="Stop every resident process in the socket directory (all venvs), and "
                   "the plugins' helper processes there.")
def stop(every: bool) -> None:
    """Stop the resident process (running commands finish first)."""
    from envd_core.resident import lockfile, wire
    from envd_core.resident.client import servers
    from envd_core.resident.client import stop as stop_server

    directory, sock, _key = _where()
    stopped = 0
    for path in servers(directory) if every else [sock]:
        pid = stop_server(path)
        if pid is not None:
            click.echo(f"Stopped resident process {pid} ({path})")
            stopped += 1
    if every:
        from envd_core.resident.helpers import stop_all

        for pid in stop_all(directory):
            click.echo(f"Stopped helper process {pid}")
            stopped += 1
    if not stopped:
        click.echo("No resident process was running")
    if every and wire.check_dir(directory, create=False) is None:
        # crashed servers' leftovers; a server that exits removes its own
        swept = lockfile.sweep(directory, keep="")
        if swept:
            click.echo(f"Removed the lock files of {swept} resident processes no longer running")
