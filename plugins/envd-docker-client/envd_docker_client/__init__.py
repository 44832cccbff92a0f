"""The Docker Engine client envd's Docker plugins share, built on the ``docker`` SDK.

A library, not a plugin (it registers no entry point). ``envd-moby`` (moby-worker builder),
``envd-docker-runner`` and the coming docker-container builder depend on it:

- :mod:`envd_docker_client.client`: ``open_client`` (``DOCKER_HOST``/``DOCKER_TLS_VERIFY``/
  ``DOCKER_CERT_PATH`` as ``docker.from_env``, or an explicit host) and ``docker_errors``, which
  turns SDK and connection failures into one-line envd errors;
- :mod:`envd_docker_client.images`: engine version, streamed image load and push (with the user's
  registry credentials), applying an image config through create + commit;
- :mod:`envd_docker_client.exec`: exec with streamed stdin/stdout/stderr over a hijacked socket,
  and ``dial_container_stdio`` (``buildctl dial-stdio`` in a container) for the BuildKit bridge;
- :mod:`envd_docker_client.upgrade`: the ``POST /grpc`` h2c upgrade the SDK has no call for.

Nothing here imports ``docker`` at module level: ``envd context ls`` loads every plugin and must
stay light, so the SDK is imported inside the functions that talk to the daemon.
"""

from __future__ import annotations

__all__: list[str] = []
