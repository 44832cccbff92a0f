"""A private CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import attrs


@attrs.frozen
class Pki:
    """Files of one private CA and the certificates it signed."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_context(self, *, require_client_cert: bool = False) -> ssl.SSLContext:
        """The TLS context the double serves with (optionally demanding a client cert)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.server_cert, self.server_key)
        if require_client_cert:
            ctx.verify_mode = ssl.CERT_REQUIRED
            ctx.load_verify_locations(self.ca)
        return ctx


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: Path, name: str) -> Pki:
    """Make CA ``name`` in ``directory`` and sign a server (IP 127.0.0.1) and a client cert."""
    directory.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.pem", "-days", "2", "-subj", f"/CN={name}", cwd=directory)
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1\n"
                                          "extendedKeyUsage=serverAuth\n")
    (directory / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for role in ("server", "client"):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{role}.key",
                 "-out", f"{role}.csr", "-subj", f"/CN=envd-h13-{role}", cwd=directory)
        _openssl("x509", "-req", "-in", f"{role}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{role}.pem", "-days", "2",
                 "-extfile", f"{role}.ext", cwd=directory)
    return Pki(ca=directory / "ca.pem", server_cert=directory / "server.pem",
               server_key=directory / "server.key", client_cert=directory / "client.pem",
               client_key=directory / "client.key")
