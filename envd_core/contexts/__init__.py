"""Contexts: which builder builds and which runner runs.

- :mod:`.model` — the :class:`Context` record and the set of contexts in a store
- :mod:`.validate` — name rules
- :mod:`.store` — the :class:`ContextStore` base class and the embedded JSON file store
- :mod:`.resolve` — which context is in force, and why
"""
