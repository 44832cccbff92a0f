"""The double's SSH gateway: ContainerSSH's part in a real envd-server, on ``asyncssh``.

Upstream envd-server puts ContainerSSH in front of the environments. A client connects as
``<login_name>/<environment>``, ContainerSSH asks envd-server's public-key webhook whether the
key belongs to ``login_name`` (the keys ``POST /users/:login/keys`` registered), then its SSH
proxy backend connects to ``<environment>:2222`` as user ``envd`` and relays the session.

This module does the same with a real SSH implementation (``asyncssh``, a test-only dependency):

- public-key authentication only, against the keys registered with the double;
- the environment must exist and belong to the login (else the login is refused);
- each session (shell with or without a terminal, or a command, with binary stdin/stdout/stderr,
  exit status and signals) is relayed to the container's own SSH server on port 2222 as
  ``envd``, authenticated with the gateway's key, which the double writes into the container;
- ``direct-tcpip`` channels (``ssh -L``, the ``LocalForward`` lines of an envd-server SSH entry)
  are opened from the container's SSH server onwards, as ContainerSSH's proxy forwards them.

It runs its own asyncio loop in a thread, so the synchronous HTTP double can start and stop it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import asyncssh

__all__ = ["SSHGateway"]

#: The port of the SSH server inside every environment (upstream's envd-sshd listens there).
BACKEND_PORT = 2222
BACKEND_USER = "envd"

#: ``(login, environment) -> container address``; raises ``LookupError`` when refused.
Resolver = Callable[[str, str], str]
#: ``login -> the OpenSSH public keys registered for it``.
KeysOf = Callable[[str], list[str]]


class SSHGateway:
    """Listen on ``127.0.0.1:<port>`` and relay ``login/env`` sessions to the environments."""

    def __init__(self, *, keys_of: KeysOf, resolve: Resolver, port: int = 0) -> None:
        self.keys_of = keys_of
        self.resolve = resolve
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        #: The key the gateway logs in to environments with (the double installs its public half).
        self.client_key = asyncssh.generate_private_key("ssh-ed25519")
        self.public_key = self.client_key.export_public_key().decode().strip()
        self.loop = asyncio.new_event_loop()
        self._server: asyncssh.SSHAcceptor | None = None
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(port), self.loop).result(30)
        self.port: int = self._server.get_port()

    async def _listen(self, port: int) -> asyncssh.SSHAcceptor:
        gateway = self

        class Server(asyncssh.SSHServer):
            def __init__(self) -> None:
                self.backend: asyncssh.SSHClientConnection | None = None
                self.target: str | None = None

            def begin_auth(self, username: str) -> bool:
                return True  # always authenticate

            def password_auth_supported(self) -> bool:
                return False

            def public_key_auth_supported(self) -> bool:
                return True

            def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
                login, sep, env = username.partition("/")
                if not sep or not login or not env:
                    return False
                offered = key.export_public_key().decode().split()[:2]
                if not any(registered.split()[:2] == offered
                           for registered in gateway.keys_of(login)):
                    return False
                try:
                    self.target = gateway.resolve(login, env)
                except LookupError:
                    return False
                return True

            def connection_lost(self, exc: Exception | None) -> None:
                if self.backend is not None:
                    self.backend.close()

            async def connect_backend(self) -> asyncssh.SSHClientConnection:
                if self.backend is None:
                    assert self.target is not None
                    self.backend = await asyncssh.connect(
                        self.target, BACKEND_PORT, username=BACKEND_USER,
                        client_keys=[gateway.client_key], known_hosts=None,
                        agent_path=None, config=None)
                return self.backend

            def connection_requested(self, dest_host: str, dest_port: int, orig_host: str,
                                     orig_port: int) -> Any:
                # a handler: asyncssh calls it with the channel's reader and writer
                async def handler(reader: asyncssh.SSHReader[bytes],
                                  writer: asyncssh.SSHWriter[bytes]) -> None:
                    await _forward(self, dest_host, dest_port, reader, writer)

                return handler

        def relay(process: asyncssh.SSHServerProcess[bytes]) -> Any:
            return _relay(process)

        return await asyncssh.create_server(
            Server, "127.0.0.1", port, server_host_keys=[self.host_key], encoding=None,
            process_factory=relay, allow_scp=False, sftp_factory=None)

    def close(self) -> None:
        """Stop listening, end every session, stop the loop."""
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
                await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


async def _relay(process: asyncssh.SSHServerProcess[bytes]) -> None:
    """One session: the same command (or shell) and terminal on the environment's sshd."""
    server = process.get_extra_info("connection").get_owner()
    try:
        backend = await server.connect_backend()
    except (OSError, asyncssh.Error) as exc:
        process.stderr.write(f"envd-server gateway: cannot reach the environment: {exc}\r\n"
                             .encode())
        process.exit(255)
        return
    term_type = process.term_type
    width, height, _, _ = process.term_size
    remote = await backend.create_process(
        process.command, term_type=term_type,
        term_size=(width, height) if term_type else None,
        request_pty="force" if term_type else False, encoding=None,
        stdin=process.stdin, stdout=process.stdout, stderr=process.stderr)
    result = await remote.wait(check=False)
    if result.exit_signal:
        signal, core, message, lang = result.exit_signal
        process.exit_with_signal(signal, core, message, lang)
    else:
        process.exit(result.exit_status if result.exit_status is not None else 255)


async def _forward(server: Any, dest_host: str, dest_port: int,
                   reader: asyncssh.SSHReader[bytes], writer: asyncssh.SSHWriter[bytes]) -> None:
    """``ssh -L``: a direct-tcpip channel opened onwards from the environment's sshd."""
    try:
        backend = await server.connect_backend()
        remote_reader, remote_writer = await backend.open_connection(
            dest_host, dest_port, encoding=None)
    except (OSError, asyncssh.Error):
        writer.close()
        return

    async def pump(source: Any, sink: Any) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
        except (OSError, asyncssh.Error):
            pass
        finally:
            sink.write_eof() if sink.can_write_eof() else sink.close()

    await asyncio.gather(pump(reader, remote_writer), pump(remote_reader, writer))
    writer.close()
    remote_writer.close()
