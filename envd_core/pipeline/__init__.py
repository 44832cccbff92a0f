"""Running a build on a context: the compiled build file → the context's builder → the output.

:mod:`envd_core.pipeline.execute` is the library behind ``envd build``. It knows contexts only
through the :class:`~envd_core.builder.Builder` and :class:`~envd_core.runner.Runner` objects it is
handed, and the build file only through :mod:`envd_core.envdfile`.
"""
