"""Collab's load tests and benchmarks: ``python -m loadtest <scenario>`` or ``python -m loadtest all``.

Each scenario is one module (``foundation``, ``tasks``, ``ws``, ``soak``, ...,
listed in :data:`loadtest.__main__.SCENARIOS`). Shared pieces:
:mod:`loadtest.serverproc` runs ``collab`` as a separate process,
:mod:`loadtest.wrk` drives wrk, :mod:`loadtest.machine` describes the machine,
:mod:`loadtest.cpu` measures CPU use, :mod:`loadtest.hdr` keeps latencies in
HDR histograms, :mod:`loadtest.profiling` runs py-spy, :mod:`loadtest.progress`
draws the progress bar, :mod:`loadtest.report` writes the JSON result and the
sections of ``docs/benchmarks.md``, :mod:`loadtest.charts` its PNG charts.
Results go to ``loadtest/results/`` (ignored by git); see loadtest/README.md.
"""
