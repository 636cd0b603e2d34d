"""vLLM's Ray executor, for real against a running Ray cluster: ``--distributed-executor-backend
ray`` with a tensor-parallel size N above one.

Like vLLM (``vllm/v1/executor/ray_utils.py``, ``initialize_ray_cluster``) the head connects to
the cluster its container started (``ray.init(address="auto")``, on ``VLLM_HOST_IP`` when set)
and asks for a placement group of N ``{"GPU": 1}`` bundles — here ``STRICT_SPREAD``, one per
node, so the group only forms once every host's raylet has joined. While it waits it logs
vLLM's line at 10, 30, 70 … seconds; after ``VLLM_SIM_PG_TIMEOUT`` seconds (vLLM's 1800 by
default) it fails with vLLM's ``ValueError``. Once placed, one task per bundle reports its
node's address and pid, which go into each rank's ``assigned`` line as Ray prefixes a remote
actor's output: ``(RayWorkerWrapper pid=P, ip=A) INFO … rank R in world size N is assigned as
…``.

``ray`` is imported only here, only when asked for (only the Ray test image has it).
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from .config import SimConfig
from .distributed import DistFailure
from .vlog import ENGINE, log_line

WAIT_INTERVAL = 10.0  # vLLM's first wait before it says it is waiting (then doubled)
POLL = 0.25
TASK_TIMEOUT = 120.0  # a task per bundle: a worker process on each node starts first


def bundle_specs(config: SimConfig) -> list[dict[str, float]]:
    return [{"GPU": 1.0} for _ in range(config.world_size)]


def waiting_line(elapsed: float, specs: list[dict[str, float]]) -> str:
    return log_line(
        "INFO", "ray_utils.py:283",
        f"Waiting for creating a placement group of specs for {int(elapsed)} seconds. "
        f"specs={specs}. Check `ray status` and `ray list nodes` to see if you have enough "
        "resources, and make sure the IP addresses used by ray cluster are the same as "
        "VLLM_HOST_IP environment variable specified in each node if you are running on a "
        "multi-node.", ENGINE)


def cannot_place_lines(config: SimConfig, specs: list[dict[str, float]]) -> list[str]:
    return [
        log_line("ERROR", "core.py:1010", "EngineCore failed to start.", ENGINE),
        f"{ENGINE}ValueError: Cannot provide a placement group of placement_group_specs="
        f"{specs} within {int(config.pg_timeout)} seconds. See `ray status` and `ray list "
        "nodes` to make sure the cluster has enough resources.",
    ]


def no_cluster_lines(error: str) -> list[str]:
    return [log_line("ERROR", "core.py:1010", "EngineCore failed to start.", ENGINE),
            f"{ENGINE}{error}"]


def assigned_ray_line(config: SimConfig, rank: int, address: str, pid: int) -> str:
    tp = config.tensor_parallel_size
    return log_line(
        "INFO", "parallel_state.py:1713",
        f"rank {rank} in world size {config.world_size} is assigned as DP rank 0, "
        f"PP rank {rank // tp}, PCP rank 0, TP rank {rank % tp}, EP rank N/A, EPLB rank N/A",
        f"(RayWorkerWrapper pid={pid}, ip={address}) ")


def _where() -> tuple[str, int]:
    """Run on each bundle's node: its Ray address and this worker's pid."""
    ray = importlib.import_module("ray")
    return str(ray.util.get_node_ip_address()), os.getpid()


class RayWorld:
    """The placed ranks: the group is given back and the driver disconnects on close."""

    def __init__(self, ray: Any, group: Any, ranks: list[tuple[str, int]]) -> None:
        self.ray = ray
        self.group = group
        self.ranks = ranks

    def close(self) -> None:
        try:
            self.ray.util.remove_placement_group(self.group)
        finally:
            self.ray.shutdown()


async def place_ranks(config: SimConfig, stop: asyncio.Event,
                      log: Callable[[str], None]) -> RayWorld | None:
    """Place one rank per GPU bundle; None when stopped meanwhile.

    Raises :class:`DistFailure` with vLLM's lines when there is no cluster or the group
    cannot be placed in time."""
    try:
        ray = importlib.import_module("ray")
    except ImportError as exc:
        raise DistFailure(no_cluster_lines(
            f"ValueError: Failed to import Ray: {exc}. Please install Ray with `pip install "
            "ray`.")) from exc
    try:
        ray.init(address="auto", _node_ip_address=os.environ.get("VLLM_HOST_IP"),
                 logging_level=logging.WARNING, log_to_driver=False)
    except ConnectionError as exc:
        raise DistFailure(no_cluster_lines(f"ConnectionError: {exc}")) from exc
    specs = bundle_specs(config)
    group = ray.util.placement_group(specs, strategy="STRICT_SPREAD")
    world = RayWorld(ray, group, [])
    try:
        if not await _wait_placed(ray, group, config, specs, stop, log):
            world.close()
            return None
        strategy = importlib.import_module("ray.util.scheduling_strategies")
        where = ray.remote(num_cpus=0, num_gpus=1)(_where)
        refs = [where.options(scheduling_strategy=strategy.PlacementGroupSchedulingStrategy(
            group, placement_group_bundle_index=index)).remote() for index in range(len(specs))]
        world.ranks = [(str(a), int(p)) for a, p in ray.get(refs, timeout=TASK_TIMEOUT)]
    except BaseException:
        world.close()
        raise
    for rank, (address, pid) in enumerate(world.ranks):
        log(assigned_ray_line(config, rank, address, pid))
    return world


async def _wait_placed(ray: Any, group: Any, config: SimConfig, specs: list[dict[str, float]],
                       stop: asyncio.Event, log: Callable[[str], None]) -> bool:
    """True once placed, False when stopped; DistFailure after the timeout."""
    ready = group.ready()
    started = time.monotonic()
    interval, next_line = WAIT_INTERVAL, WAIT_INTERVAL
    while not stop.is_set():
        done, _ = ray.wait([ready], timeout=POLL)
        if done:
            return True
        elapsed = time.monotonic() - started
        if elapsed >= config.pg_timeout:
            raise DistFailure(cannot_place_lines(config, specs))
        if elapsed >= next_line:
            log(waiting_line(elapsed, specs))
            interval *= 2
            next_line += interval
        await asyncio.sleep(0)
    return False
