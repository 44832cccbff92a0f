"""Environment names, image labels and SSH host names, as upstream envd derives them."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from envd_core.errors import ValidationError
from envd_core.listing import LABEL_CUDA as LABEL_CUDA
from envd_core.listing import LABEL_CUDNN as LABEL_CUDNN
from envd_core.listing import LABEL_GPU as LABEL_GPU
from envd_core.listing import LABEL_JUPYTER_ADDRESS as LABEL_JUPYTER_ADDRESS

__all__ = [
    "LABEL_PREFIX",
    "environment_name",
    "label_json",
    "project_dir_in_environment",
    "ssh_host",
]

LABEL_PREFIX = "ai.tensorchord.envd."
LABEL_VENDOR = LABEL_PREFIX + "vendor"
LABEL_PORTS = LABEL_PREFIX + "ports"
LABEL_RUNTIME_GRAPH = LABEL_PREFIX + "graph.runtime"
LABEL_GENERAL_GRAPH = LABEL_PREFIX + "graph.general"
LABEL_CONTEXT = LABEL_PREFIX + "build.context"
LABEL_APT = LABEL_PREFIX + "apt.packages"
LABEL_PYPI = LABEL_PREFIX + "pypi.commands"
LABEL_ENV_NAME = LABEL_PREFIX + "name"
VENDOR_ENVD = "envd"

#: What upstream keeps of a directory name: runs of characters Docker accepts in a name.
_NAME_PART = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]*")
#: Upstream cuts derived names to this length.
MAX_DERIVED_NAME = 30
#: Where a project is mounted inside an environment (upstream's layout).
HOME = "/home/envd"


def environment_name(project: str | os.PathLike[str]) -> str:
    """The environment name upstream derives from a project directory.

    The directory's basename, keeping only the runs matching ``[a-zA-Z0-9][a-zA-Z0-9_.-]*``
    (joined), cut to 30 characters. A directory whose name keeps nothing is an error.
    """
    base = Path(os.path.abspath(os.fspath(project))).name
    derived = "".join(_NAME_PART.findall(base))[:MAX_DERIVED_NAME]
    if not derived:
        raise ValidationError(
            f"cannot derive an environment name from the directory `{base or '/'}`",
            hint="give one with --name",
        )
    return derived


def project_dir_in_environment(project: str | os.PathLike[str]) -> str:
    """``/home/envd/<basename>``: where ``up`` mounts the project and starts the shell."""
    return f"{HOME}/{Path(os.path.abspath(os.fspath(project))).name}"


def ssh_host(name: str) -> str:
    """The ``Host`` of an environment in ``~/.ssh/config`` (``ssh <name>.envd``)."""
    return f"{name}.envd"


def label_json(labels: Mapping[str, str], key: str) -> Any:
    """A JSON label's value, ``None`` when absent or not JSON (foreign images)."""
    raw = labels.get(key)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None
