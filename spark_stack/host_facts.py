"""What a host says about itself (``/proc/meminfo``, ``nvidia-smi``): plain data.

:mod:`spark_stack.deploy.host_stats` reads it over SSH; :mod:`spark_stack.top.figures` shows
it. It sits below both so neither imports the other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuFacts:
    index: str
    name: str
    utilization_percent: float | None = None
    temperature_c: float | None = None


@dataclass(frozen=True)
class HostFacts:
    """One host's memory and GPUs as last read (``reachable`` False: ``error`` says why)."""

    name: str
    address: str
    reachable: bool
    error: str | None = None
    memory_total_bytes: int | None = None
    memory_available_bytes: int | None = None
    gpus: tuple[GpuFacts, ...] = ()
