"""``up``'s wait for a Ray cluster (``distributed: ray``): every node's GPU counted by the head.

vLLM on the head asks Ray for one GPU per rank; until every worker's raylet has joined, it only
logs that it waits. So, before waiting for the API, ``up`` runs ``ray status`` in the head
container (``docker exec``) until it shows one GPU per host, as NVIDIA's playbook checks by
hand, and otherwise names the count it saw.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from ..stack.ray_argv import STATUS_ARGV, ray_gpus
from .diagnose import Diagnosis
from .readiness import Failed

# `docker exec` of argv in the head → (exit code, output); whether the head still runs.
Exec = Callable[[tuple[str, ...]], tuple[int, str]]


def wait_ray_gpus(run_in_head: Exec, running: Callable[[], bool], want: int, *, model: str,
                  timeout: float, interval: float = 1.0,
                  clock: Callable[[], float] = time.monotonic,
                  sleep: Callable[[float], None] = time.sleep) -> Failed | None:
    """None once ``ray status`` in the head shows ``want`` GPUs; a failure after ``timeout``
    or when the head stopped (its log then says why: :mod:`.readiness` reads it)."""
    started = clock()
    seen: tuple[float, float] | None = None
    last = ""
    while True:
        if not running():
            return None  # the API wait reads the head's exit and its log
        code, output = run_in_head(STATUS_ARGV)
        if code == 0:
            seen = ray_gpus(output)
            if seen is not None and seen[1] >= want:
                return None
        else:
            last = output.strip().splitlines()[-1] if output.strip() else f"exit {code}"
        if clock() - started >= timeout:
            break
        sleep(interval)
    counted = "no GPU" if seen is None else f"{seen[1]:g} of {want} GPUs"
    return Failed("timeout", Diagnosis(
        "ray_workers_missing",
        f"the Ray cluster of {model} never counted one GPU per host: `ray status` in the head "
        f"shows {counted}" + (f" ({last})" if seen is None and last else ""),
        "check each worker's log (`spark-stack logs " + model + "`): it must reach the head's "
        "link address on port 6379; `spark-stack doctor` checks the link", last),
        clock() - started, "ray")
