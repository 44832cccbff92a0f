"""Environments: what ``envd up/run/down/envs/exec/images`` do, independent of any runner.

- :mod:`~envd_core.environments.names` — environment names and SSH host names, as upstream.
- :mod:`~envd_core.environments.spec` — flags + image labels → :class:`EnvironmentSpec`.
- :mod:`~envd_core.environments.sshconfig` — the ``<name>.envd`` entry in ``~/.ssh/config``.
- :mod:`~envd_core.environments.keys` — the envd SSH key pair.
- :mod:`~envd_core.environments.operations` — launch, wait, remove, list, describe, images.

Everything talks to a runner only through :class:`envd_core.runner.Runner`; nothing here
imports a Docker or Kubernetes client.
"""
