"""Run the envd-server double in the foreground (for trying the runner by hand, or benches)."""

from __future__ import annotations

import argparse
import signal
import ssl
import time
from types import FrameType

from .server import EnvdServerDouble


def main() -> None:
    parser = argparse.ArgumentParser(prog="envd_server_double", description=__doc__)
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--ssh-port", type=int, default=2222,
                        help="port of the SSH gateway (runner option ssh-port)")
    parser.add_argument("--jwt-secret", default="envd-server")
    parser.add_argument("--docker-host", default="unix:///var/run/docker.sock")
    parser.add_argument("--tls-cert", help="serve TLS with this certificate (and --tls-key)")
    parser.add_argument("--tls-key")
    parser.add_argument("--client-ca", help="require client certificates signed by this CA")
    args = parser.parse_args()
    tls = None
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
        if args.client_ca:
            tls.verify_mode = ssl.CERT_REQUIRED
            tls.load_verify_locations(args.client_ca)
    double = EnvdServerDouble(jwt_secret=args.jwt_secret, tls=tls, docker_host=args.docker_host,
                              port=args.port, ssh_port=args.ssh_port)
    # a background job ignores SIGINT: stop (and clean up) on SIGTERM too
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"envd-server double on {double.address}, SSH gateway on port {double.gateway.port} "
          "(Ctrl-C or SIGTERM stops it and removes its containers)")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        double.close()


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
