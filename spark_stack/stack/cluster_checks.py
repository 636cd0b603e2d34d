"""Checks of a model across several hosts (two Sparks) and of the link they share.

A multi-node model names its hosts (``hosts: [head, worker]``); the stack's ``cluster`` section
gives each of them its end of the link (the ConnectX-7 interface and its static address).
Errors here stop ``validate``/``up``; the lint (MTP on a multi-node model) only warns.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping

from ..errors import Problem
from ..vllm.flags import flag_set_for_image
from . import schema
from .argv import NODE_FLAGS
from .loaded import LoadedStack, did_you_mean
from .yamlpos import KeyPath

LINK_EXAMPLE = "{interface: enp1s0f1np1, address: 192.168.100.11}"
# The known cause of "Tensor parallel size (2) exceeds available GPUs (1)" (playbooks #63).
LINK_LOCAL_CAUSE = ("vLLM's ranks would not reach each other over it — the known cause of "
                    "'Tensor parallel size (2) exceeds available GPUs (1)' "
                    "(dgx-spark-playbooks #63)")


def _multi_models(loaded: LoadedStack) -> list[tuple[int, schema.ContainerModel]]:
    return [(i, m) for i, m in enumerate(loaded.stack.models)
            if isinstance(m, schema.ContainerModel) and m.hosts is not None]


def multi_node_hosts(loaded: LoadedStack) -> list[Problem]:
    """Every host of a multi-node model is defined, once, with its end of the link; the
    tensor-parallel size agrees with the number of hosts (one GB10 GPU each)."""
    stack = loaded.stack
    known = stack.all_hosts()
    link = stack.cluster.link if stack.cluster else {}
    problems = []
    for index, model in _multi_models(loaded):
        hosts = model.hosts or []
        at = ("models", index, "hosts")
        if model.host is not None:
            problems.append(loaded.problem(
                f"model '{model.name}' sets both 'host' and 'hosts'", ("models", index, "host"),
                fix="keep 'hosts' (first = head) for a model across hosts, or 'host' for one"))
        if len(hosts) < 2:
            problems.append(loaded.problem(
                f"model '{model.name}' names {len(hosts)} host(s) in 'hosts': a model across "
                "hosts needs at least two", at,
                fix=f"write host: {hosts[0]}" if hosts else "name the hosts, head first"))
            continue
        for key, problem in _listed_hosts(
                loaded, hosts, at, known,
                twice=f"host '{{key}}' appears twice in the hosts of model '{model.name}'",
                twice_fix="name each host once (one rank per GB10)",
                unknown=f"model '{model.name}' runs on unknown host '{{key}}'"):
            if problem is not None:
                problems.append(problem)
            elif stack.cluster is not None and key not in link:
                problems.append(loaded.problem(
                    f"host '{key}' of model '{model.name}' has no end of the link in "
                    "'cluster.link'", ("cluster", "link"),
                    fix=f"add cluster.link.{key}: {LINK_EXAMPLE} (its CX7 port and address)"))
        if stack.cluster is None:
            problems.append(loaded.problem(
                f"model '{model.name}' runs across hosts but the stack has no 'cluster' section",
                at, fix="add cluster: {link: {HOST: " + LINK_EXAMPLE + ", …}} naming each "
                "host's CX7 interface and address (README: 'Two Sparks')"))
        tp = model.tensor_parallel_size
        if tp is not None and tp != len(hosts):
            problems.append(loaded.problem(
                f"tensor_parallel_size {tp} does not match the {len(hosts)} hosts of model "
                f"'{model.name}' (one GB10 GPU each): vLLM would fail with 'Tensor parallel "
                f"size ({tp}) exceeds available GPUs'", ("models", index, "tensor_parallel_size"),
                fix=f"set tensor_parallel_size: {len(hosts)}, or leave it out (default: the "
                "number of hosts)"))
        if stack.cluster is None or stack.cluster.distributed == "native":
            problems += _node_flags(loaded, index, model)
    return problems


def _node_flags(loaded: LoadedStack, index: int, model: schema.ContainerModel) -> list[Problem]:
    if not model.image:
        return []
    flags = flag_set_for_image(model.image)
    missing = [f for f in NODE_FLAGS if f not in flags.flags]
    if not missing:
        return []
    return [loaded.problem(
        f"vLLM {flags.version} (image {model.image}) has no {', '.join(missing)}: it cannot "
        "run one model across hosts natively", ("models", index, "image"),
        fix="use vllm/vllm-openai:v0.28.0 or newer")]


def cluster_link(loaded: LoadedStack) -> list[Problem]:
    """Each end of the link: a defined host, an address that is neither link-local nor
    loopback, and no address used twice."""
    stack = loaded.stack
    if stack.cluster is None:
        return []
    known = stack.all_hosts()
    problems = []
    seen: dict[str, str] = {}
    for key, end in stack.cluster.link.items():
        at = ("cluster", "link", key)
        if key not in known:
            problems.append(loaded.problem(
                f"cluster.link names unknown host '{key}'", at,
                fix=f"define it under 'hosts:' ({did_you_mean(key, list(known), 'host')})"))
        address = ipaddress.ip_address(end.address)
        if address.is_link_local:
            problems.append(loaded.problem(
                f"the link address {end.address} of host '{key}' is link-local "
                f"({'169.254.0.0/16' if address.version == 4 else 'fe80::/10'}): "
                f"{LINK_LOCAL_CAUSE}", (*at, "address"),
                fix=f"give {end.interface} a static address (netplan, e.g. 192.168.100.10/24 "
                "and .11 on the other Spark) and write it here; `spark-stack doctor` checks"))
        elif address.is_loopback or address.is_unspecified:
            problems.append(loaded.problem(
                f"the link address {end.address} of host '{key}' is not reachable from the "
                "other host", (*at, "address"),
                fix=f"write the static address of {end.interface} (`ip -br addr` on the host)"))
        if end.address in seen:
            problems.append(loaded.problem(
                f"hosts '{seen[end.address]}' and '{key}' have the same link address "
                f"{end.address}", (*at, "address"), fix="give each host its own address"))
        seen.setdefault(end.address, key)
    return problems


def mtp_across_hosts(loaded: LoadedStack) -> list[Problem]:
    """A lint: MTP (speculative decoding) across hosts is gated off by vLLM's own recipe."""
    return [loaded.problem(
        f"model '{model.name}' runs across hosts with speculative decoding (MTP): it crashes "
        "in cluster mode near context depth 65535 (eugr/spark-vllm-docker #308) and vLLM's "
        "2× Spark recipe turns it off (the MTP draft lacks SupportsPP, vllm #50098)",
        ("models", index, "speculative"),
        fix="remove 'speculative' from this model")
        for index, model in _multi_models(loaded)
        if model.multi_node and model.speculative is not None]


def replica_hosts(loaded: LoadedStack) -> list[Problem]:
    """A model's replicas: defined hosts, each once, and not mixed with the ways of running
    one copy (``host``) or one copy across hosts (``hosts``)."""
    stack = loaded.stack
    known = stack.all_hosts()
    problems = []
    for index, model in enumerate(stack.models):
        if not isinstance(model, schema.ContainerModel) or model.replicas is None:
            continue
        replicas = model.replica_hosts
        at = ("models", index, "replicas")
        if model.host is not None:
            problems.append(loaded.problem(
                f"model '{model.name}' sets both 'host' and 'replicas'", ("models", index, "host"),
                fix="keep 'replicas' (one full copy per host), or 'host' for one copy"))
        if model.hosts is not None:
            across = [key for key in replicas if key in model.hosts]
            problems.append(loaded.problem(
                f"model '{model.name}' sets both 'replicas' and 'hosts'"
                + (f" (host '{across[0]}' is in both)" if across else "")
                + ": a copy per host and one copy across hosts exclude each other",
                ("models", index, "hosts"),
                fix="keep 'replicas' for twice the sessions, or 'hosts' for a model too big "
                "for one host"))
        if not replicas:
            problems.append(loaded.problem(
                f"model '{model.name}' lists no replicas", at,
                fix="name the hosts that each run a copy, e.g. replicas: [spark-a, spark-b]"))
        problems += [problem for _, problem in _listed_hosts(
            loaded, replicas, at, known,
            twice=f"host '{{key}}' appears twice in the replicas of model '{model.name}'",
            twice_fix="name each host once (one copy of the model per host)",
            unknown=f"replica '{{key}}' of model '{model.name}' is an unknown host")
            if problem is not None]
        if model.bind == "loopback" and len(replicas) > 1:
            problems.append(loaded.problem(
                f"model '{model.name}' has replicas bound to loopback: the proxy reaches "
                "replicas directly, not through an SSH tunnel", ("models", index, "bind"),
                fix="leave out 'bind' (lan) for a model with replicas"))
    return problems


def _listed_hosts(loaded: LoadedStack, keys: list[str], at: KeyPath,
                  known: Mapping[str, object], *, twice: str, twice_fix: str, unknown: str,
                  ) -> Iterator[tuple[str, Problem | None]]:
    """Each host of a model's list (``hosts`` or ``replicas``) with its problem: named twice,
    or not defined; None when it is fine. ``twice`` and ``unknown`` are messages with ``{key}``."""
    for item, key in enumerate(keys):
        if key in keys[:item]:
            yield key, loaded.problem(twice.format(key=key), (*at, item), fix=twice_fix)
        elif key not in known:
            yield key, loaded.problem(
                unknown.format(key=key), (*at, item),
                fix=f"define it under 'hosts:' ({did_you_mean(key, list(known), 'host')})")
        else:
            yield key, None
