"""Printed by the example image's entrypoint: proves the copy, the env and the pip package."""

import os

import six

print(os.environ.get("GREETING", "no greeting"), "| six", six.__version__)
