"""The CAs, server and client certificates and the htpasswd file, made once with openssl."""

from __future__ import annotations

import subprocess

from .config import AUTH_PASSWORD, AUTH_USER, CERTS, LOGS
from .shell import run


def _openssl(args: list[str]) -> None:
    run(["openssl", *args], LOGS / "certs.log")


def _make_ca(stem: str, cn: str) -> None:
    if (CERTS / f"{stem}.pem").exists():
        return
    _openssl(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
              "-nodes", "-days", "3650", "-subj", f"/CN={cn}",
              "-keyout", str(CERTS / f"{stem}-key.pem"), "-out", str(CERTS / f"{stem}.pem"),
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"])


def _make_leaf(stem: str, ca: str, cn: str, usage: str, sans: str | None) -> None:
    if (CERTS / f"{stem}.pem").exists():
        return
    key, csr = CERTS / f"{stem}-key.pem", CERTS / f"{stem}.csr"
    ext = CERTS / f"{stem}.ext"
    lines = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature",
             f"extendedKeyUsage={usage}", "subjectKeyIdentifier=hash",
             "authorityKeyIdentifier=keyid,issuer"]
    if sans:
        lines.append(f"subjectAltName={sans}")
    ext.write_text("\n".join(lines) + "\n")
    _openssl(["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
              "-nodes", "-subj", f"/CN={cn}", "-keyout", str(key), "-out", str(csr)])
    _openssl(["x509", "-req", "-in", str(csr), "-CA", str(CERTS / f"{ca}.pem"),
              "-CAkey", str(CERTS / f"{ca}-key.pem"), "-CAcreateserial", "-days", "3650",
              "-extfile", str(ext), "-out", str(CERTS / f"{stem}.pem")])
    csr.unlink()
    ext.unlink()


def ensure_certs() -> str:
    """BuildKit mTLS CA/server/client, an unrelated CA for negative tests, the registry CA and
    server cert, and the auth registry's htpasswd. Existing files are kept."""
    CERTS.mkdir(parents=True, exist_ok=True)
    sans = "IP:127.0.0.1,DNS:localhost"
    _make_ca("buildkit-ca", "envd-infra buildkit CA")
    _make_leaf("buildkit-server", "buildkit-ca", "localhost", "serverAuth", sans)
    _make_leaf("buildkit-client", "buildkit-ca", "envd-infra client", "clientAuth", None)
    _make_ca("bad-ca", "envd-infra unrelated CA")
    _make_ca("registry-ca", "envd-infra registry CA")
    _make_leaf("registry-server", "registry-ca", "127.0.0.1", "serverAuth", sans)
    htpasswd = CERTS / "registry.htpasswd"
    if not htpasswd.exists():
        out = subprocess.run(["htpasswd", "-Bbn", AUTH_USER, AUTH_PASSWORD],
                             capture_output=True, text=True, check=True).stdout
        htpasswd.write_text(out)
    return str(CERTS)
