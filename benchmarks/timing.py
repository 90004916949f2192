"""Shared timing helpers for the benchmark scripts (imported as ``timing``)."""

from __future__ import annotations

import statistics
import time
from typing import Callable

import jax


def step_runner(step: Callable, state, batch) -> Callable[[int], float]:
  """``run(n)``: applies the jitted ``step(state, batch)`` n times, seconds per step.

  The state carries over from call to call (so a donated state stays valid).
  """
  carry = [state]

  def run(iterations: int) -> float:
    state = carry[0]
    start = time.perf_counter()
    for _ in range(iterations):
      state, metrics = step(state, batch)
    jax.block_until_ready((state, metrics))
    carry[0] = state
    return (time.perf_counter() - start) / iterations

  return run


def interleaved_medians(
    runners: dict[str, Callable[[int], float]],
    iterations: int,
    repeats: int,
    warmup: int = 2,
) -> dict[str, float]:
  """Median seconds per step of each runner, measured round-robin."""
  for run in runners.values():
    run(warmup)  # compile and warm up
  times = {name: [] for name in runners}
  for _ in range(repeats):
    for name, run in runners.items():
      times[name].append(run(iterations))
  return {name: statistics.median(samples) for name, samples in times.items()}
