"""From zero to a stack file (``spark-stack claude --host HOST``): look at the host, choose a
preset, draft the stack file, check that the host can run it, and say what ``up`` will do.

Nothing is written or started here. The edge is :func:`look`: the preflight's facts script and
one more (driver, the stacks spark-stack runs there, the images present) over an open SSH
connection. Everything else is pure, so the decisions are tested without a host: a host that
cannot run the preset (no docker, no NVIDIA GPU, wrong architecture, too little memory or disk)
is refused by :func:`prechecks` with the preflight's own words and fix, before the stack file
exists.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field

from pydantic import ValidationError

from .deploy.connector import HostConnection
from .deploy.preflight import (
    FACTS_SCRIPT,
    GIB_KIB,
    VLLM_DEFAULT_UTILIZATION,
    HostFacts,
    PreflightCheck,
    docker_arch,
    parse_facts,
    run_checks,
)
from .deployment import Deployment
from .errors import UsageError
from .spec import LABEL_STACK
from .stack import schema
from .stack.presets import DEFAULT_PRESET, Preset
from .stack.schema import DEFAULT_LISTEN
from .stack.template import stack_template

_MARK = "@@spark-stack-look@@"
PROXY_PORTS = range(4000, 4100)  # the first free one on this machine becomes proxy.listen


@dataclass(frozen=True)
class HostLook:
    """What the host is: the preflight's facts plus the driver, spark-stack's stacks there
    (stack → its containers) and, once asked, which images it has (image → arch, None: absent)."""

    display: str
    facts: HostFacts
    driver: str = ""
    stacks: dict[str, list[str]] = field(default_factory=dict)
    images: dict[str, str | None] = field(default_factory=dict)


def parse_host(text: str) -> schema.HostConfig:
    """``HOST`` or ``user@HOST`` (an address, hostname or ~/.ssh/config alias)."""
    user, _, address = text.rpartition("@")
    try:
        return schema.HostConfig.model_validate({"address": address, "user": user or None})
    except ValidationError as exc:
        reason = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise UsageError(f"--host {text!r}: {reason}",
                         fix="pass an IP, a hostname or an ~/.ssh/config alias, optionally "
                         "as user@host (e.g. --host nvidia@spark)") from None


def same_host(stack: schema.Stack, wanted: schema.HostConfig) -> bool:
    """Whether ``--host`` names the stack file's host (its user too, when given)."""
    have = stack.host
    if have is None or have.address != wanted.address:
        return False
    return wanted.user is None or wanted.user == have.user


def _extra_script(images: Sequence[str], *, host: bool = True) -> str:
    """The driver and spark-stack's containers (``host``), and each image's architecture."""
    parts = [
        f"echo '{_MARK} driver'; nvidia-smi --query-gpu=driver_version --format=csv,noheader "
        "2>/dev/null | head -n1",
        f"echo '{_MARK} stacks'; docker ps -a --filter label={LABEL_STACK} --format "
        f"'{{{{.Label \"{LABEL_STACK}\"}}}} {{{{.Names}}}} {{{{.State}}}}' 2>/dev/null",
    ] if host else []
    for index, image in enumerate(images):
        parts.append(f"echo '{_MARK} image {index}'; docker image inspect --format "
                     f"'{{{{.Architecture}}}}' '{image}' 2>/dev/null")
    return "; ".join(parts)


def parse_extra(text: str, images: Sequence[str]) -> tuple[str, dict[str, list[str]],
                                                         dict[str, str | None]]:
    """The driver, the stacks and the images' architectures from :func:`_extra_script`."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.startswith(_MARK + " "):
            current = sections.setdefault(line[len(_MARK) + 1:].strip(), [])
        elif line.strip():
            current.append(line.strip())
    driver = (sections.get("driver") or [""])[0]
    stacks: dict[str, list[str]] = {}
    for line in sections.get("stacks", []):
        name, _, rest = line.partition(" ")
        stacks.setdefault(name, []).append(rest)
    archs: dict[str, str | None] = {}
    for index, image in enumerate(images):
        found = sections.get(f"image {index}")
        archs[image] = found[0] if found else None
    return driver, stacks, archs


def look(conn: HostConnection, images: Sequence[str] = ()) -> HostLook:
    """The host's facts over an open connection (two scripts, read only)."""
    facts = parse_facts(conn.run_script(FACTS_SCRIPT, timeout=60).stdout)
    driver, stacks, archs = parse_extra(conn.run_script(_extra_script(images), timeout=60).stdout,
                                        images)
    return HostLook(conn.display, facts, driver, stacks, archs)


def with_images(conn: HostConnection, found: HostLook, images: Sequence[str]) -> HostLook:
    """``found`` with the architectures of ``images`` on the host (None: not there)."""
    if not images:
        return found
    script = _extra_script(images, host=False)
    _, _, archs = parse_extra(conn.run_script(script, timeout=60).stdout, images)
    return HostLook(found.display, found.facts, found.driver, found.stacks, archs)


def describe(found: HostLook) -> list[str]:
    """What the host is, one line per part, for a person (pure)."""
    facts = found.facts
    lines = [f"architecture: {facts.arch or 'unknown'} ({docker_arch(facts.arch)})"]
    if facts.nvidia_ok:
        gpus = ", ".join(g.name for g in facts.gpus)
        lines.append(f"GPU: {gpus}" + (f" (driver {found.driver})" if found.driver else ""))
    else:
        first = facts.nvidia_output.splitlines()[0] if facts.nvidia_output else "nvidia-smi"
        lines.append(f"GPU: none found ({first})")
    if facts.mem_total_kib:
        lines.append(f"memory: {facts.mem_total_kib / GIB_KIB:.1f} GiB, "
                     f"{facts.mem_available_kib / GIB_KIB:.1f} GiB available")
    root = facts.docker_root or "/"
    free = facts.free_at(root)
    if free is not None:
        lines.append(f"disk: {free / GIB_KIB:.0f} GiB free at {root}")
    if facts.docker_ok:
        runtime = "with" if "nvidia" in facts.runtimes else "without"
        lines.append(f"docker {facts.server_version}, {runtime} the NVIDIA runtime")
    else:
        first = next((x for x in facts.docker_output.splitlines() if x.strip()), "no answer")
        lines.append(f"docker: not usable ({first})")
    if found.stacks:
        for name, containers in sorted(found.stacks.items()):
            lines.append(f"spark-stack stack '{name}': {'; '.join(containers)}")
    else:
        lines.append("spark-stack: nothing of it runs here yet")
    return lines


def recommend(found: HostLook) -> tuple[str, str]:
    """The preset for this host and why (pure): the GB10's own, which the checks then hold
    against what the host has."""
    names = " ".join(g.name for g in found.facts.gpus)
    if "GB10" in names:
        return DEFAULT_PRESET, "a DGX Spark (GB10): the recommended preset"
    if found.facts.nvidia_ok:
        return DEFAULT_PRESET, (f"{names}: not a GB10; the recommended Spark preset, which the "
                                "checks below hold against this host")
    return DEFAULT_PRESET, "no NVIDIA GPU found: the recommended Spark preset needs one"


def free_proxy_port(host: str = "127.0.0.1", ports: range = PROXY_PORTS) -> int:
    """The first port of ``ports`` nothing listens on here (the proxy's listen)."""
    for port in ports:
        with socket.socket() as probe:
            try:
                probe.bind((host, port))
            except OSError:
                continue
            return port
    raise UsageError(f"no free port for the proxy on {host} in {ports.start}-{ports.stop - 1}",
                     fix="stop a process that holds one, or write proxy.listen in a stack file "
                     "(`spark-stack init`)")


def draft(preset: Preset, host: schema.HostConfig, *, name: str, reference: str,
          image: str | None = None, listen: str = DEFAULT_LISTEN, command: str) -> str:
    """The stack file ``claude --host`` writes: ``init``'s template for the host and preset."""
    return stack_template(preset, host.address, name, reference=reference, user=host.user,
                          image=image, listen=listen, written_by=command)


def prechecks(deployment: Deployment, found: HostLook) -> list[PreflightCheck]:
    """The preflight ``up`` will run, on what :func:`look` saw (pure); a failed one stops the
    first run before anything is written."""
    specs = [m.container for m in deployment.models if m.container is not None]
    own_stack_there = deployment.stack in found.stacks
    return run_checks(
        found.facts,
        specs,
        gpu_memory_utilization={
            m.name: m.gpu_memory_utilization or VLLM_DEFAULT_UTILIZATION
            for m in deployment.models if m.container is not None
            and "--kv-cache-memory-bytes" not in m.container.command},
        image_archs={spec.image: found.images.get(spec.image) for spec in specs},
        own_ports=(),
        hf_token_in_env={spec.model: any(e.name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
                                         for e in spec.env) for spec in specs},
        # This stack already runs there (another checkout of it): `up` will judge its ports.
        skip=("port",) if own_stack_there else (),
    )


def up_steps(deployment: Deployment, found: HostLook, launcher: str) -> list[str]:
    """What ``up`` will do, in order, for a person (pure)."""
    steps = []
    for model in deployment.models:
        spec = model.container
        if spec is None:
            steps.append(f"start model {model.name} ({model.kind})")
            continue
        if found.images.get(spec.image) is None:
            steps.append(f"pull {spec.image} on {found.display} (it is not there yet)")
        checkpoint = spec.command[0] if spec.command else spec.served_name
        steps.append(f"start container {spec.name}: vLLM serving {checkpoint} on port "
                     f"{spec.host_port} (gpus: {spec.gpus})")
        steps.append(f"wait until {model.name} answers (a first start downloads the weights: "
                     "10-15 min for a large model)")
    steps.append(f"start the proxy at {deployment.proxy.url}, where Claude Code connects")
    steps.append(f"write the Claude Code launcher {launcher}")
    return steps
