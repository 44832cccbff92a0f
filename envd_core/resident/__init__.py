"""envd's resident process: envd's modules imported once, one forked child per command.

Every ``envd`` process used to import grpc, protobuf, click, the plugins, the docker SDK and the
kubernetes client before doing anything (0.1-0.5 s of CPU). A per-user resident server keeps them
imported and forks a child for each non-interactive command; the client hands over its argv,
environment, working directory, umask and stdio descriptors, forwards signals, and exits with the
child's status. See docs/resident.md.

* :mod:`~envd_core.resident.wire` — socket place, key, framing (built-in modules only)
* :mod:`~envd_core.resident.client` — the hand-off in ``envd``'s entry point (idem)
* :mod:`~envd_core.resident.server` — the accept/fork/reap loop
* :mod:`~envd_core.resident.child` — a forked child becoming the client's process
* :mod:`~envd_core.resident.preload` — what the server imports
* :mod:`~envd_core.resident.fresh` — whether the loaded code still matches the files
"""
