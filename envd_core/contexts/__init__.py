"""Contexts: which builder builds and which runner runs.

- :mod:`.model` — the :class:`Context` record and the set of contexts in a store
- :mod:`.validate` — name rules
- :mod:`.store` — the :class:`ContextStore` base class and the embedded JSON file store
- :mod:`.resolve` — which context is in force, and why
- :mod:`.operations` — what ``envd context …`` does (create, update, import…), through a store
- :mod:`.upstream` — upstream envd's gob context store: read it, plan importing it
- :mod:`.gob` — the small Go ``encoding/gob`` reader :mod:`.upstream` uses
"""
