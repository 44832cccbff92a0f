"""Images in dockerd: version, load, push with the user's credentials, and applying a config.

Bodies stream both ways: a load reads the tarball in chunks as it sends it, and the daemon's JSON
progress messages are read one at a time, so a multi-gigabyte image never sits in memory.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import IO, TYPE_CHECKING, Any

from envd_core.errors import EnvdError, RunnerError
from envd_core.imageref import parse_reference
from envd_docker_client.client import docker_errors

if TYPE_CHECKING:
    import docker

__all__ = [
    "commit_config",
    "engine_version",
    "load_image",
    "push_image",
    "registry_auth",
]

CHUNK = 1 << 20


def engine_version(client: docker.DockerClient, host: str, *,
                   error: type[EnvdError] = RunnerError) -> str:
    """The daemon's version (``20.10.24``): from the negotiation of :func:`open_client` when it
    made ``client``, else one ``GET /version``."""
    from envd_docker_client.client import server_version

    known = server_version(client)
    if known is not None:
        return str(known.get("Version", "?"))
    with docker_errors(host, "report its version", error=error):
        return str(client.version().get("Version", "?"))


def _messages(stream: Iterable[Any], host: str, what: str,
              error: type[EnvdError]) -> Iterator[dict[str, Any]]:
    """The daemon's progress messages; an ``error`` message raises ``error`` with its text."""
    for message in stream:
        if not isinstance(message, dict):
            continue
        if message.get("error"):
            detail = str(message.get("error")).strip().splitlines()[0]
            raise error(f"Docker daemon at `{host}` failed to {what}: {detail}",
                        hint=_hint_for(detail))
        yield message


def _hint_for(detail: str) -> str | None:
    lowered = detail.lower()
    if "unauthorized" in lowered or "authentication required" in lowered or "denied" in lowered:
        return "log in to the registry (docker login REGISTRY) and retry"
    return None


class _ChunkedReader:
    """Gives requests an iterator of chunks, so the tarball is sent as it is read."""

    def __init__(self, handle: IO[bytes]) -> None:
        self.handle = handle

    def __iter__(self) -> Iterator[bytes]:
        while True:
            chunk = self.handle.read(CHUNK)
            if not chunk:
                return
            yield chunk


def load_image(client: docker.DockerClient, host: str, tarball: IO[bytes], *,
               error: type[EnvdError] = RunnerError) -> list[str]:
    """``docker load`` of a docker-format tarball; returns the loaded image names."""
    loaded: list[str] = []
    with docker_errors(host, "load the image", error=error):
        api: Any = client.api  # APIClient.load_image has no annotations in types-docker
        stream = api.load_image(iter(_ChunkedReader(tarball)), quiet=True)
        for message in _messages(stream, host, "load the image", error):
            text = str(message.get("stream", ""))
            for prefix in ("Loaded image: ", "Loaded image ID: "):
                if text.startswith(prefix):
                    loaded.append(text[len(prefix):].strip())
    return loaded


def registry_auth(name: str) -> dict[str, str]:
    """The credentials for pushing ``name``, from the user's docker config (helpers included)."""
    from envd_core.buildkit.session.auth import AuthProvider

    host = parse_reference(name).registry
    creds = AuthProvider.from_docker_config().lookup(host)
    if not creds.username and not creds.secret:
        return {}
    if not creds.username:
        return {"identitytoken": creds.secret, "serveraddress": host}
    return {"username": creds.username, "password": creds.secret, "serveraddress": host}


def push_image(client: docker.DockerClient, host: str, name: str, *,
               error: type[EnvdError] = RunnerError) -> str | None:
    """``docker push name`` with the user's credentials; the pushed digest when reported."""
    ref = parse_reference(name)
    tag = ref.digest or ref.tag_or_default
    digest = None
    with docker_errors(host, f"push `{name}`", error=error):
        stream = client.api.push(ref.repository, tag=tag, stream=True, decode=True,
                                 auth_config=registry_auth(name) or None)
        for message in _messages(stream, host, f"push `{name}`", error):
            aux = message.get("aux")
            if isinstance(aux, dict) and aux.get("Digest"):
                digest = str(aux["Digest"])
    return digest


# The Engine API container-config keys an OCI image config's ``config`` part maps onto.
_CONFIG_KEYS = ("Env", "Entrypoint", "Cmd", "WorkingDir", "User", "Labels", "ExposedPorts",
                "Volumes", "StopSignal")


def commit_config(client: docker.DockerClient, host: str, name: str, config: dict[str, Any], *,
                  error: type[EnvdError] = RunnerError) -> str:
    """Re-tag ``name`` as itself with the OCI image ``config`` (Env, Cmd, Labels…) applied.

    dockerd's ``moby`` exporter ignores an image config passed as an exporter attribute, so the
    image arrives with an empty config. Committing an unstarted container of it with the wanted
    config is the Engine API's way to set one (it adds an empty layer).

    A cached rebuild exports the very same image again (same id), and the commit of the same
    config onto it would make a new, equivalent image each time (the commit's timestamp
    differs): three requests, a container's mount and a layer write per ``envd up``, and one more
    dangling image. So the committed id is remembered per (daemon, exported image, config) in
    the envd cache directory, and when that image still exists the name is tagged onto it
    instead (an inspect and a tag). A commit whose image was deleted since is simply made again.

    Known limit: dockerd fills an empty ``Cmd`` of the commit from the container when the config
    has no ``Entrypoint`` either (sending ``"Cmd": null`` does not stop it), so an image whose
    config has neither gets the placeholder ``/bin/true`` as its ``Cmd``.
    """
    import docker.errors

    ref = parse_reference(name)
    body = {key: config[key] for key in _CONFIG_KEYS if key in config}
    api = client.api
    with docker_errors(host, f"apply the image config to `{name}`", error=error):
        exported = str(api.inspect_image(name).get("Id", ""))  # type: ignore[no-untyped-call]
        key = _commit_key(host, exported, body)
        known = _commits().get(key)
        if known:
            try:
                api.tag(known, ref.repository, tag=ref.tag_or_default, force=True)
                return known
            except docker.errors.NotFound:
                pass  # the earlier commit was removed: make it again
        # an empty entrypoint, so the commit never inherits one the config did not ask for
        container = api.create_container(name, command=["/bin/true"], entrypoint=[])["Id"]
        try:
            result = api.commit(container, repository=ref.repository, tag=ref.tag_or_default,
                                pause=False, conf=body)
        finally:
            api.remove_container(container, force=True)
    committed = str(result.get("Id", ""))
    if exported and committed:
        _remember(key, committed)
    return committed


#: How many (exported image, config) → commit pairs the cache keeps (newest last).
_COMMITS_KEPT = 256


def _commits_path() -> str:
    import os

    base = os.environ.get("ENVD_CACHE_DIR")
    if not base:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = os.path.join(xdg or os.path.join(os.path.expanduser("~"), ".cache"), "envd")
    return os.path.join(os.path.expanduser(base), "docker-config-commits.json")


def _commit_key(host: str, exported: str, body: dict[str, Any]) -> str:
    import hashlib
    import json

    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return f"{host}|{exported}|{digest}"


def _commits() -> dict[str, str]:
    """The remembered commits; an unreadable or corrupt cache is an empty one."""
    import json

    try:
        with open(_commits_path(), encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _remember(key: str, committed: str) -> None:
    """Add one pair (a cache: a failed write or a lost race only costs a commit later)."""
    import contextlib
    import json
    from pathlib import Path

    from envd_core.atomic import write_atomic
    from envd_core.errors import StoreError

    commits = _commits()
    commits.pop(key, None)
    commits[key] = committed
    kept = dict(list(commits.items())[-_COMMITS_KEPT:])
    path = Path(_commits_path())
    with contextlib.suppress(OSError, StoreError):
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(kept).encode(), mode=0o600)
