"""Collab's load tests and benchmarks: ``python -m loadtest <scenario>``.

Each scenario is one module (``foundation`` is the first). Shared pieces:
:mod:`loadtest.serverproc` runs ``collab`` as a separate process,
:mod:`loadtest.wrk` drives wrk, :mod:`loadtest.machine` describes the machine
and measures CPU use, :mod:`loadtest.report` writes the JSON result and the
tables in ``docs/benchmarks.md``. Results go to ``loadtest/results/`` (ignored
by git).
"""
