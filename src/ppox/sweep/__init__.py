"""Hyperparameter sweeps: every configuration x seed of a static setting in one program.

A sweep spec (TOML) lists, per ``HParams`` field, grid values and/or random-search ranges,
and a number of seeds::

    seeds = 3                 # runs per configuration: seeds seed, seed+1, ...
    seed = 0                  # optional base seed (default: --seed)
    random_seed = 0           # optional: seeds the random search's sampling
    [grid]                    # HParams name -> list of values (cartesian product)
    learning_rate = [2.5e-4, 1e-3]
    clip_eps = [0.1, 0.2]
    [random]                  # optional; its samples are crossed with the grid
    samples = 16
    ent_coef = { log_uniform = [1e-4, 1e-1] }
    vf_coef = { uniform = [0.25, 1.0] }
    [static]                  # optional; PPOConfig field -> list (one compile each)
    num_envs = [4, 8]

Hyperparameters are traced (``HParams``), so all configurations x seeds of one static
setting are a batch of runs trained by one vmapped, jitted program -- one compile -- via
``ppox.host.run.train_runs``. Static options (``PPOConfig``: shapes, network widths) change
the program: the sweep loops over their combinations, one compile each, and says so. If a
batch is too large for memory, it runs in equal batches (the last padded by repeating a
run, whose result is dropped), each batch one vmapped call, with a batch size that is a
multiple of the local device count so every device trains its share of the runs. On a CPU
that needs one XLA device per core: ``ppox sweep`` sets it up itself (``ppox.cli.main``;
``PPOX_CPU_DEVICES=N`` chooses N); from Python, start the process with
``XLA_FLAGS=--xla_force_host_platform_device_count=<cores>`` (before JAX initializes).

Run ``j`` of a configuration uses ``PRNGKey(seed + j)``, exactly like
``ppox train --seed <seed + j>`` with that configuration: the same computation, equal up to
float rounding. (XLA may round differently for a batch of 64 runs than for one; over long
training such a difference can eventually flip one sampled action, after which the two
trajectories drift apart -- statistically alike, no longer equal. Over a CartPole budget
of 20 updates they agree to 1e-4, which the tests check.)

Outputs in ``--out DIR``: ``results.csv`` (one row per configuration), ``curves.npz``
(learning curves of every run), ``best.toml`` (``ppox train --config DIR/best.toml``),
``spec.toml`` (the resolved spec), ``sweep.json`` (timings), ``curves_top.png`` and, for a
two-parameter grid, ``heatmap.png``. Each batch trains in ``DIR/batches/<group>-<batch>/``
and its results are kept as soon as it finishes, so an interrupted sweep resumes
(``resume=True``, ``ppox sweep --out DIR --resume``) to the same results (``store``).

Parts: ``spec`` (parsing and checking the spec), ``plan`` (configurations, batches, the
memory estimate), ``run`` (the loop), ``store`` (the sweep directory), ``report`` (results,
files, printed summary).
"""


from ppox.sweep.plan import (
    BatchPlan,
    SweepConfig,
    SweepPlan,
    estimate_run_bytes,
    expand,
    memory_budget_bytes,
    plan_batches,
)
from ppox.sweep.report import SweepResult, rank_configs, seed_stats, write_plots, write_results
from ppox.sweep.run import CompileCounter, SweepInterrupted, SweepOptions, run_sweep
from ppox.sweep.spec import Distribution, SweepSpec, load_spec, parse_spec

__all__ = [
    "BatchPlan",
    "CompileCounter",
    "Distribution",
    "SweepConfig",
    "SweepInterrupted",
    "SweepOptions",
    "SweepPlan",
    "SweepResult",
    "SweepSpec",
    "estimate_run_bytes",
    "expand",
    "load_spec",
    "memory_budget_bytes",
    "parse_spec",
    "plan_batches",
    "rank_configs",
    "run_sweep",
    "seed_stats",
    "write_plots",
    "write_results",
]
