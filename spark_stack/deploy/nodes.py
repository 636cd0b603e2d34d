"""The rules of a model across hosts, for ``up`` and ``status`` (pure).

* Its nodes change together: when one node's container must change, every node is replaced
  (vLLM's world of ranks forms once, at start).
* Every node runs the same image id (eugr/spark-vllm-docker checks this before a launch).
* A head that serves is the proof that every rank joined: vLLM opens its API only once the
  world of ranks formed. A node's own log says so too — the line ``up`` names a worker by when
  its head does not answer, and ``status`` reads when the head is down — but only at INFO
  level (``VLLM_LOGGING_LEVEL=WARNING`` hides it). vLLM logs, on every node, once the world of
  ranks formed (torch.distributed's rendezvous is a barrier)::

      rank 1 in world size 2 is assigned as DP rank 0, PP rank 0, PCP rank 0, TP rank 1, …

  (``vllm/distributed/parallel_state.py``, ``initialize_model_parallel``). Before that a node
  logs ``world_size=2 rank=1 local_rank=0 distributed_init_method=tcp://HEAD:PORT …`` and waits.
  The simulator's multi-node mode logs the same two lines.
* A worker of a Ray cluster (``distributed: ray``) has joined once its ``ray start`` says
  ``Ray runtime started.`` (it reached the head's GCS); the ranks' lines are the head's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace

from ..deployment import Deployment
from ..errors import DeployError
from ..stack.ray_argv import RAY_WORKER_STARTED
from .actions import Action

JOINED = re.compile(r"rank (?P<rank>\d+) in world size (?P<size>\d+) is assigned as")


def joined(log: str, rank: int) -> bool:
    """Whether a node's log shows that ``rank`` joined its world (or, on a Ray worker, the
    head's cluster)."""
    if rank > 0 and RAY_WORKER_STARTED in log:
        return True
    return any(int(m["rank"]) == rank for m in JOINED.finditer(log))


def together(deployment: Deployment, plans: Mapping[str, list[Action]]
             ) -> dict[str, list[Action]]:
    """``plans`` (per host) with every node of a changing multi-node model replaced too."""
    multi = {m.name for m in deployment.models if m.multi_node}
    changing = {a.model for actions in plans.values() for a in actions
                if a.model in multi and a.kind != "keep"}
    return {
        key: [replace(a, kind="replace", reason="another node of the model changes (the "
                      "nodes of a model start together)")
              if a.kind == "keep" and a.model in changing else a for a in actions]
        for key, actions in plans.items()
    }


def same_image(deployment: Deployment, image_ids: Mapping[str, Mapping[str, str | None]],
               changing: Sequence[str]) -> None:
    """Refuse to start a multi-node model whose nodes hold different ids of its image.

    ``image_ids`` maps host → image → its id there (None: missing)."""
    for model in deployment.models:
        if not model.multi_node or model.name not in changing:
            continue
        assert model.container is not None
        image = model.container.image
        ids = {n.host_key: image_ids.get(n.host_key, {}).get(image) for n in model.nodes}
        if len({i for i in ids.values()}) > 1:
            seen = ", ".join(f"{key}: {(i or 'missing')[:19]}" for key, i in ids.items())
            raise DeployError(
                f"model {model.name}: image {image} differs between its hosts ({seen}); every "
                "node must run the same build",
                fix="run `spark-stack up --pull` to pull the tag on every host, or pin the "
                "image by digest (image: repo@sha256:…)")
