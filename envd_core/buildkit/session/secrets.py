"""Build secrets served to the daemon (``Secrets/GetSecret``).

A secret's value is read only when a build step asks for it, so a file secret that changes
between builds is always current, and values never enter the build graph or the cache key.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from envd_core.errors import ValidationError

if TYPE_CHECKING:
    from envd_core.buildkit._pb import secrets_pb2
    from envd_core.buildkit.session.h2serve import CallContext

GET_SECRET_METHOD = "/moby.buildkit.secrets.v1.Secrets/GetSecret"


@dataclass(frozen=True)
class SecretSource:
    """Where one secret's bytes come from; build with `from_file`, `from_env` or `from_bytes`."""

    describe: str
    read: Callable[[], bytes]

    @classmethod
    def from_file(cls, path: str | os.PathLike[str]) -> SecretSource:
        """The contents of a file, read when the build asks for it."""
        full = os.path.abspath(os.fspath(path))

        def read() -> bytes:
            try:
                with open(full, "rb") as fh:
                    return fh.read()
            except OSError as exc:
                raise ValidationError(
                    f"secret file `{full}` cannot be read: {exc.strerror}; check the path"
                ) from None

        return cls(describe=f"file {full}", read=read)

    @classmethod
    def from_env(cls, name: str) -> SecretSource:
        """The value of an environment variable, read when the build asks for it."""

        def read() -> bytes:
            value = os.environ.get(name)
            if value is None:
                raise ValidationError(
                    f"secret environment variable `{name}` is not set; export it or drop the secret"
                )
            return value.encode()

        return cls(describe=f"env {name}", read=read)

    @classmethod
    def from_bytes(cls, data: bytes) -> SecretSource:
        """A fixed value."""
        return cls(describe="bytes", read=lambda: bytes(data))


class SecretsService:
    """Serves ``GetSecret``: NOT_FOUND for unknown ids, the bytes otherwise."""

    def __init__(self, secrets: Mapping[str, SecretSource]) -> None:
        self.secrets = dict(secrets)

    def get_secret(
        self, request: secrets_pb2.GetSecretRequest, context: CallContext
    ) -> secrets_pb2.GetSecretResponse:
        """The gRPC handler."""
        import grpc

        from envd_core.buildkit._pb import secrets_pb2

        source = self.secrets.get(request.ID)
        if source is None:
            context.abort(grpc.StatusCode.NOT_FOUND, f"secret {request.ID} not found")
        try:
            data = source.read()
        except ValidationError as exc:
            context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        return secrets_pb2.GetSecretResponse(data=data)
