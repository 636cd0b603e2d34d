"""Checks across fields of a schema-valid stack.

``ERROR_CHECKS`` make a stack invalid (exit 2); ``LINT_CHECKS`` only warn about known-bad
settings. Each check is a function ``LoadedStack -> list[Problem]``.
"""

from __future__ import annotations

import fnmatch
import re
from collections import defaultdict

from ..errors import Problem
from ..routing import is_glob
from . import schema
from .argv import served_name
from .cluster_checks import cluster_link, mtp_across_hosts, multi_node_hosts, replica_hosts
from .lint import LINTS, nvfp4_version_problems
from .loaded import Check, LoadedStack, did_you_mean
from .references import bare_dollars, look_alikes
from .secrets import has_reference
from .vllm_check import abbreviated_flags, extra_arg_path, flag_set_notes, vllm_flags

# Claude Code's system prompt and tools weigh ~25K tokens; leave room for a useful answer.
CLAUDE_CODE_PROMPT_TOKENS = 25_000
MIN_MAX_MODEL_LEN = 32_768
# The sum of gpu_memory_utilization of models sharing one GPU may not exceed this.
MAX_SHARED_GPU_UTILIZATION = 0.95


def duplicate_names(loaded: LoadedStack) -> list[Problem]:
    seen: dict[str, int] = {}
    problems = []
    for index, model in enumerate(loaded.stack.models):
        if model.name in seen:
            problems.append(
                loaded.problem(
                    f"duplicate model name '{model.name}' (also models[{seen[model.name]}])",
                    ("models", index, "name"),
                    fix="give every model a unique name",
                )
            )
        seen.setdefault(model.name, index)
    return problems


def duplicate_ports(loaded: LoadedStack) -> list[Problem]:
    problems = []
    used: dict[tuple[str, int], str] = {}
    for index, model in enumerate(loaded.stack.models):
        if isinstance(model, schema.ContainerModel):
            places = _model_hosts(model)
        elif isinstance(model, schema.SimulatorModel):
            places = ["localhost"]
        else:
            continue
        clashes = [used[(where, model.port)] for where in places if (where, model.port) in used]
        if clashes:
            problems.append(
                loaded.problem(
                    f"port {model.port} is already used by model '{clashes[0]}' on the same host",
                    ("models", index, "port"),
                    fix="give each model its own port",
                )
            )
        for where in places:
            used.setdefault((where, model.port), model.name)
    proxy = loaded.stack.proxy
    if ("localhost", proxy.port) in used:
        problems.append(
            loaded.problem(
                f"proxy port {proxy.port} is also used by model "
                f"'{used[('localhost', proxy.port)]}'",
                ("proxy", "listen"),
                fix="choose another proxy port",
            )
        )
    return problems


def _model_hosts(model: schema.ContainerModel) -> list[str]:
    """The host keys a container model runs on (every node of a multi-node model)."""
    if model.hosts:
        return list(dict.fromkeys(model.hosts))
    if model.replicas:
        return list(dict.fromkeys(model.replica_hosts))
    return [model.host or schema.DEFAULT_HOST_KEY]


def hosts_defined(loaded: LoadedStack) -> list[Problem]:
    stack = loaded.stack
    problems = []
    hosts = stack.all_hosts()
    if stack.host is not None and schema.DEFAULT_HOST_KEY in stack.hosts:
        problems.append(
            loaded.problem(
                f"'hosts' may not name a host '{schema.DEFAULT_HOST_KEY}' when 'host' is set",
                ("hosts", schema.DEFAULT_HOST_KEY),
                fix="rename it, or move 'host' into 'hosts'",
            )
        )
    for index, model in enumerate(stack.models):
        if not isinstance(model, schema.ContainerModel):
            continue
        if model.hosts is not None or model.replicas is not None:
            pass  # cluster_checks.multi_node_hosts, cluster_checks.replica_hosts
        elif model.host is not None and model.host not in hosts:
            problems.append(
                loaded.problem(
                    f"model '{model.name}' runs on unknown host '{model.host}'",
                    ("models", index, "host"),
                    fix=f"define it under 'hosts:' (known: {', '.join(hosts) or 'none'})",
                )
            )
        elif stack.host_for(model) is None:
            problems.append(
                loaded.problem(
                    f"model '{model.name}' runs in a container but the stack has no host",
                    # At the model's missing `host` key (located at the model), not the model
                    # itself: refused values elsewhere in the model do not hide it.
                    ("models", index, "host"),
                    fix="add 'host: {address: …, user: …}' (the GB10), or set 'host:' on the "
                    "model when several hosts are defined",
                )
            )
        for required in ("image", "model"):
            if getattr(model, required) is None:
                problems.append(
                    loaded.problem(
                        f"model '{model.name}' needs '{required}'",
                        ("models", index),
                        fix=f"set '{required}:' or use a preset (`spark-stack init --help` "
                        "lists them)",
                    )
                )
    return problems


def routes_known(loaded: LoadedStack) -> list[Problem]:
    stack = loaded.stack
    names = [m.name for m in stack.models]
    problems = []
    for pattern, target in stack.proxy.routes.items():
        if target not in names:
            problems.append(
                loaded.problem(
                    f"route '{pattern}' points to unknown model '{target}'",
                    ("proxy", "routes", pattern),
                    fix=did_you_mean(target, names, "model"),
                )
            )
    for alias, target in stack.claude.models.items():
        if target not in names:
            problems.append(
                loaded.problem(
                    f"claude alias '{alias}' points to unknown model '{target}'",
                    ("claude", "models", alias),
                    fix=did_you_mean(target, names, "model"),
                )
            )
    default = stack.claude.default_model
    if default is not None and default not in names and not any(
        fnmatch.fnmatchcase(default, p) for p in stack.proxy.routes
    ):
        problems.append(
            loaded.problem(
                f"claude default_model '{default}' is neither a model nor matched by a route",
                ("claude", "default_model"),
                fix=f"use one of: {', '.join(sorted(set(names)))}",
            )
        )
    return problems


def _name_owners(stack: schema.Stack) -> dict[str, tuple[str, int]]:
    """A model's name or served name → the (model, index) it reaches (the first one)."""
    owner: dict[str, tuple[str, int]] = {}
    for index, model in enumerate(stack.models):
        owner.setdefault(model.name, (model.name, index))
    for index, model in enumerate(stack.models):
        owner.setdefault(served_name(model), (model.name, index))
    return owner


def shared_served_names(loaded: LoadedStack) -> list[Problem]:
    """A lint: two models serving one name — the proxy sends that name to the first only."""
    owner = _name_owners(loaded.stack)
    problems = []
    for index, model in enumerate(loaded.stack.models):
        served = served_name(model)
        first = owner[served]
        if first[0] != model.name:
            problems.append(loaded.problem(
                f"model '{model.name}' serves the name '{served}', which already reaches model "
                f"'{first[0]}' (models[{first[1]}]): the proxy sends it there, never here",
                _served_name_path(loaded, index),
                fix=f"give '{model.name}' its own served_name (clients reach it by "
                f"'{model.name}' meanwhile)",
            ))
    return problems


def routing_conflicts(loaded: LoadedStack) -> list[Problem]:
    """Names that would route two ways: a route shadowing a model's own name or served name,
    a fallback to an unknown model (spark_stack.routing has the rules)."""
    stack = loaded.stack
    problems = []
    owner = _name_owners(stack)
    for pattern, target in stack.proxy.routes.items():
        found = owner.get(pattern)
        if found is not None and found[0] != target:
            problems.append(loaded.problem(
                f"route '{pattern}' → '{target}' shadows model '{found[0]}', whose own name or "
                "served name it is: a model's own names always reach it",
                ("proxy", "routes", pattern),
                fix=f"remove the route, or route another name to '{target}'",
            ))
    fallback = stack.proxy.fallback
    names = [m.name for m in stack.models]
    if fallback is not None and fallback != "none" and fallback not in names:
        problems.append(loaded.problem(
            f"proxy fallback '{fallback}' is not a model",
            ("proxy", "fallback"),
            fix=did_you_mean(fallback, [*names, "none"], "model"),
        ))
    return problems


def shadowed_routes(loaded: LoadedStack) -> list[Problem]:
    """A glob route that an earlier one always wins over (routes are tried in file order)."""
    problems = []
    routes = list(loaded.stack.proxy.routes.items())
    for later, (pattern, target) in enumerate(routes):
        if not is_glob(pattern):
            continue  # an exact name is matched before any glob
        winner = next((earlier for earlier, _ in routes[:later]
                       if is_glob(earlier) and _covers(earlier, pattern)), None)
        if winner is not None:
            problems.append(loaded.problem(
                f"route '{pattern}' → '{target}' never applies: the earlier route '{winner}' → "
                f"'{loaded.stack.proxy.routes[winner]}' matches every name it does, and glob "
                "routes are tried in file order",
                ("proxy", "routes", pattern),
                fix=f"move '{pattern}' above '{winner}', or remove it",
            ))
    return problems


def _covers(earlier: str, later: str) -> bool:
    """Whether every name ``later`` matches, ``earlier`` matches too. Decided only for the
    shapes that can be (``*``, ``PREFIX*``); other globs are assumed not to overlap."""
    if not earlier.endswith("*") or is_glob(earlier[:-1]):
        return earlier == later
    prefix = earlier[:-1]
    literal_start = later[: next((i for i, ch in enumerate(later) if ch in "*?["), len(later))]
    return literal_start.startswith(prefix)


def _served_name_path(loaded: LoadedStack, index: int) -> tuple[str | int, ...]:
    path: tuple[str | int, ...] = ("models", index, "served_name")
    return path if path in loaded.positions.keys else ("models", index)


def nvfp4_needs_recent_vllm(loaded: LoadedStack) -> list[Problem]:
    """A pinned release older than NVFP4 needs is an error (a moving tag: the lint warns)."""
    return [problem for problem, pinned in nvfp4_version_problems(loaded) if pinned]


def shared_gpu_memory(loaded: LoadedStack) -> list[Problem]:
    by_host: dict[str, list[tuple[int, schema.ContainerModel]]] = defaultdict(list)
    for index, model in enumerate(loaded.stack.models):
        if isinstance(model, schema.ContainerModel) and model.gpus != "none":
            for where in _model_hosts(model):
                by_host[where].append((index, model))
    problems = []
    for entries in by_host.values():
        total = sum(m.gpu_memory_utilization or 0.9 for _, m in entries)
        if len(entries) > 1 and total > MAX_SHARED_GPU_UTILIZATION:
            index, _ = entries[-1]
            shares = " + ".join(f"{m.gpu_memory_utilization or 0.9}" for _, m in entries)
            problems.append(
                loaded.problem(
                    f"models sharing one GPU ask for {shares} = {total:.2f} of its memory "
                    f"(more than {MAX_SHARED_GPU_UTILIZATION})",
                    ("models", index, "gpu_memory_utilization"),
                    fix="lower gpu_memory_utilization so the sum stays at or below "
                    f"{MAX_SHARED_GPU_UTILIZATION} (on a Spark ~0.4–0.5 in all)",
                )
            )
    return problems


def context_long_enough(loaded: LoadedStack) -> list[Problem]:
    problems = []
    for index, model in enumerate(loaded.stack.models):
        if model.max_model_len is not None and model.max_model_len < MIN_MAX_MODEL_LEN:
            problems.append(
                loaded.problem(
                    f"max_model_len {model.max_model_len} is too small for Claude Code, whose "
                    f"prompt alone is ~{CLAUDE_CODE_PROMPT_TOKENS // 1000}K tokens",
                    ("models", index, "max_model_len"),
                    fix=f"use at least {MIN_MAX_MODEL_LEN} (65536 or more recommended)",
                )
            )
    return problems


# Environment names that hold credentials: their values must be ${VAR} references.
_SECRET_NAME = re.compile(r"(TOKEN|SECRET|PASSWORD|PASSWD|API_?KEY|ACCESS_KEY)", re.IGNORECASE)
# vLLM flags whose value is a credential (it would show in `ps` and `docker inspect`).
_SECRET_FLAGS = ("--hf-token",)


def plain_secrets(loaded: LoadedStack) -> list[Problem]:
    """Credentials written in clear would be printed by `plan` and stored in the file."""
    problems = []
    for index, model in enumerate(loaded.stack.models):
        if not isinstance(model, schema.ContainerModel):
            continue
        for name, value in model.env.items():
            if _SECRET_NAME.search(name) and value and not has_reference(value):
                problems.append(loaded.problem(
                    f"env {name} holds a secret in clear text",
                    ("models", index, "env", name),
                    fix=f"write {name}: ${{{name}}} and export {name} before running "
                    "spark-stack",
                ))
        for item, arg in enumerate(model.extra_args):
            flag, sep, value = arg.partition("=")
            following = model.extra_args[item + 1] if item + 1 < len(model.extra_args) else ""
            secret = value if sep else following
            if flag in _SECRET_FLAGS and secret and not secret.startswith("-"):
                problems.append(loaded.problem(
                    f"'{flag}' in extra_args puts a secret in the container's command line",
                    extra_arg_path(loaded, index, model, item),
                    fix="remove it and set env: {HF_TOKEN: ${HF_TOKEN}} (vLLM reads HF_TOKEN)",
                ))
        for item, arg in enumerate(model.extra_args):
            if arg == "--api-key" or arg.startswith("--api-key="):
                problems.append(loaded.problem(
                    "--api-key must not be passed in extra_args (it would show in argv); "
                    "use the model's api_key setting",
                    extra_arg_path(loaded, index, model, item),
                    fix="remove --api-key from extra_args and set api_key: auto (or ${ENV_VAR})",
                ))
    return problems


_LOOPBACK = re.compile(r"^(127\.\d+\.\d+\.\d+|::1|localhost)$")


def proxy_token_off_loopback(loaded: LoadedStack) -> list[Problem]:
    """Caught here so `up` refuses before it starts any model (the proxy refuses too)."""
    proxy = loaded.stack.proxy
    if proxy.token is not None or _LOOPBACK.match(proxy.host):
        return []
    return [loaded.problem(
        f"the proxy listens on {proxy.listen} without a token: anyone who reaches it can use "
        "your models",
        ("proxy", "listen"),
        fix="set token: auto (generated) or token: ${VAR}, or listen on 127.0.0.1",
    )]


ERROR_CHECKS: list[Check] = [
    plain_secrets,
    look_alikes,
    duplicate_names,
    duplicate_ports,
    hosts_defined,
    multi_node_hosts,
    replica_hosts,
    cluster_link,
    routes_known,
    routing_conflicts,
    nvfp4_needs_recent_vllm,
    shared_gpu_memory,
    context_long_enough,
    proxy_token_off_loopback,
    vllm_flags,
]
LINT_CHECKS: list[Check] = [*LINTS, shared_served_names, abbreviated_flags, flag_set_notes,
                            mtp_across_hosts, bare_dollars, shadowed_routes]
