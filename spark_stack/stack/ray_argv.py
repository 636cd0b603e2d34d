"""What a model across hosts runs with ``distributed: ray`` (pure): NVIDIA's Ray playbook.

vLLM's ``examples/ray_serving/run_cluster.sh`` pattern, made to survive the SSH session that
starts it (detached containers with the model's restart policy instead of an EXIT trap):

* the head container runs ``ray start --head`` (Ray's daemons go to the background) and then
  ``exec vllm serve … --distributed-executor-backend ray`` as its main process, so the
  container's log is vLLM's and a vLLM exit ends (and restarts) the whole head;
* every other host runs a worker container, ``ray start --address HEAD:6379 --block``;
* each node declares one GPU (one GB10 per Spark) and its own link address as its node IP,
  so Ray (and vLLM's ``VLLM_HOST_IP``) never picks another interface; no dashboard, no
  usage stats.

vLLM then asks Ray for a placement group of one GPU per rank; ``up`` waits for ``ray status``
in the head to count every node's GPU (:func:`ray_gpus`) before it waits for the API.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

RAY_PORT = 6379
SHELL = "/bin/sh"
RAY = "ray"
# Ray's own environment: no usage reports, and no memory monitor killing vLLM's workers
# (NVIDIA's playbook sets the latter; GB10 memory is shared with the CPU).
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_memory_monitor_refresh_ms": "0"}
# The worker's `ray start` prints this once it reached the head's GCS and its raylet is up.
RAY_WORKER_STARTED = "Ray runtime started."
STATUS_ARGV = (RAY, "status")
_GPUS = re.compile(r"(?P<used>\d+(?:\.\d+)?)/(?P<total>\d+(?:\.\d+)?) GPU\b")


def head_start_argv(link_address: str) -> list[str]:
    """``ray start`` on the head: GCS on the link address, one GPU, nothing else exposed."""
    return [RAY, "start", "--head", "--port", str(RAY_PORT), "--node-ip-address", link_address,
            "--num-gpus", "1", "--include-dashboard=false", "--disable-usage-stats"]


def worker_argv(head_address: str, link_address: str) -> list[str]:
    """A worker node's whole command: join the head's cluster and stay in the foreground."""
    return [RAY, "start", "--address", f"{head_address}:{RAY_PORT}", "--node-ip-address",
            link_address, "--num-gpus", "1", "--disable-usage-stats", "--block"]


# What follows the model's own argv on the head (its --tensor-parallel-size, one rank per host
# by default, is already there).
SERVE_FLAGS = ("--distributed-executor-backend", "ray")


def head_script(link_address: str, serve_argv: Sequence[str]) -> str:
    """The head container's ``sh -c`` script: Ray up, then vLLM as the main process."""
    start = " ".join(shlex.quote(a) for a in head_start_argv(link_address))
    serve = " ".join(shlex.quote(a) for a in ("vllm", "serve", *serve_argv))
    return f"{start} && exec {serve}"


def ray_gpus(status_output: str) -> tuple[float, float] | None:
    """(used, total) GPUs from ``ray status``; None when it shows no GPU line (not up yet)."""
    found = _GPUS.search(status_output)
    if found is None:
        return None
    return float(found["used"]), float(found["total"])
