"""The benchmark harness: what the scripts under ``benchmarks/`` share.

``machine``  this machine's name and description, the command line, JSON, interleaved timing
``workers``  one measurement in a fresh process (``python benchmarks/worker.py``)
``peers``    the peers' runner commands, side-by-side jobs, their runner and summaries
``plans``    which (env, num_envs) points each benchmark measures
``tables``   Markdown tables
``plots``    PNGs (matplotlib)

What a user of the installed package runs (the three timed programs, the FLOP model, the
matmul peak) is ``ppox.diagnostics``; nothing under ``src/`` imports this folder.
"""
