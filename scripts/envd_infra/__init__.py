"""Provision the real infrastructure envd's integration tests and demos run against.

The entry point is ``scripts/infra`` (see docs/infra.md). The modules, in the order ``up`` uses
them: ``config`` (state paths, ports, versions, image names), ``shell`` (commands, logs, probes),
``processes`` (pid + start-time tracking, the lock), ``installs`` (apt packages, Go builds, the
rootless user), ``certs``, ``registries``, ``buildkitd``, ``images``, ``upstream`` (upstream envd
as a peer), ``report`` (``env`` and ``status``) and ``cli``. Standard library only: it runs with
the system ``python3``.
"""
