"""The light half of the ``envd-server`` runner: address and TLS settings, the token store, the
REST client and the one listing (``envd envs ls``).

A package of its own in the ``envd-server-runner`` distribution, beside ``envd_server_runner``
(the runner class and its hook): importing it does not run that package's ``__init__``, which
imports pluggy, so the fast path of ``envd envs ls`` can use it. Only the standard library and
light core modules are imported here (no attrs, no typing at run time, no ``http.client``).
"""
