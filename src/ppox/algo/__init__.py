"""Algorithms on one protocol (``ppox.algo.base``): ``ppo`` (clipped surrogate) and its
family. ``get(name)`` imports ``ppox.algo.<name>`` and returns its ``ALGORITHM``, so a new
algorithm is one new module plus its name in ``PPOConfig.algo``."""

from __future__ import annotations

import importlib

from ppox.algo.base import Algorithm, AlgoSetup, Rollout, UpdateContext


def get(name: str) -> Algorithm:
    return importlib.import_module(f"ppox.algo.{name}").ALGORITHM


__all__ = ["AlgoSetup", "Algorithm", "Rollout", "UpdateContext", "get"]
