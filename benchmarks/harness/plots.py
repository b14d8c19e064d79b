"""PNG plots of the benchmarks' results (matplotlib, Agg backend)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_figure(fig: Any, path: str | os.PathLike[str]) -> Path:
    """``tight_layout``, write the PNG (creating its folder), close the figure."""
    plt = _pyplot()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_scaling(points: Sequence[Mapping[str, Any]], path: str | os.PathLike[str],
                 title: str = "") -> Path:
    """Training steps/s vs num_envs, log-log, one line per env; compile time below."""
    plt = _pyplot()
    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(7, 7.5), sharex=True,
                                  gridspec_kw={"height_ratios": [3, 1.3]})
    for env_id in dict.fromkeys(p["env_id"] for p in points):
        ok = [p for p in points if p["env_id"] == env_id and "trainer" in p]
        if not ok:
            continue
        xs = [p["num_envs"] for p in ok]
        ax.plot(xs, [p["trainer"]["sps_median"] for p in ok], "o-", label=env_id)
        ax2.plot(xs, [p["trainer"]["compile_s"] for p in ok], "o-", label=env_id)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_ylabel("training env steps / s")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(title or "ppox training throughput vs num_envs")
    ax2.set_xscale("log", base=2)
    ax2.set_xlabel("num_envs")
    ax2.set_ylabel("compile s")
    ax2.grid(True, which="both", alpha=0.3)
    return _save_figure(fig, path)


def plot_roofline(points: Sequence[Mapping[str, Any]], peak_gflops: float,
                  path: str | os.PathLike[str], title: str = "") -> Path:
    """Per env: steps/s of env alone, rollout alone and trainer vs num_envs (log-log), and
    the trainer's useful GFLOP/s as a fraction of the measured matmul peak."""
    plt = _pyplot()
    envs = list(dict.fromkeys(p["env_id"] for p in points))
    fig, axes = plt.subplots(2, len(envs), figsize=(max(7.0, 5.0 * len(envs)), 7.5),
                             squeeze=False)
    for i, env_id in enumerate(envs):
        ok = [p for p in points if p["env_id"] == env_id and "error" not in p]
        ax, ax2 = axes[0][i], axes[1][i]
        xs = [p["num_envs"] for p in ok]
        for part, style in (("env", "s-"), ("rollout", "^-"), ("trainer", "o-")):
            ys = [p.get(part, {}).get("sps_median") for p in ok]
            if any(y is not None for y in ys):
                label = {"env": "env alone", "rollout": "rollout alone",
                         "trainer": "trainer"}[part]
                ax.plot(xs, [y if y is not None else float("nan") for y in ys], style,
                        label=label)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(env_id)
        ax.set_ylabel("env steps / s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
        frac = [100 * p.get("trainer", {}).get("useful_gflops", float("nan")) / peak_gflops
                for p in ok]
        ax2.bar([str(x) for x in xs], frac, color="tab:green")
        ax2.axhline(25, color="k", ls="--", lw=0.8)
        ax2.set_ylabel(f"useful FLOP/s, % of {peak_gflops:,.0f} GFLOP/s")
        ax2.set_xlabel("num_envs")
    fig.suptitle(title or "where the time goes: env, rollout, trainer", fontsize=10)
    return _save_figure(fig, path)


def plot_side_by_side(summaries: Mapping[str, Mapping[str, Mapping[str, Any]]],
                      path: str | os.PathLike[str], title: str = "") -> Path:
    """Bars of median steps/s per implementation, one group per comparison."""
    plt = _pyplot()
    groups = list(summaries)
    impls = list(dict.fromkeys(n for s in summaries.values() for n in s))
    fig, ax = plt.subplots(figsize=(max(6, 2.2 * len(groups) + 2), 4.5))
    width = 0.8 / max(1, len(impls))
    for j, name in enumerate(impls):
        ys = [summaries[g].get(name, {}).get("sps_median", 0.0) or 0.0 for g in groups]
        xs = [i + (j - (len(impls) - 1) / 2) * width for i in range(len(groups))]
        bars = ax.bar(xs, ys, width, label=name)
        for bar, g in zip(bars, groups, strict=True):
            s = summaries[g].get(name, {})
            if s.get("final_return_median") is not None and "skipped" not in s:
                ax.annotate(f"R {s['final_return_median']:.0f}",
                            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                            ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(groups, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("env steps / s (median; R = final return)")
    ax.set_title(title or "side by side")
    ax.legend()
    ax.grid(True, axis="y", which="both", alpha=0.3)
    return _save_figure(fig, path)
