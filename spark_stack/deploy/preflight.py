"""Checks before ``up`` changes anything; each failure names its fix.

One remote script gathers the host's facts in a single round trip (:data:`FACTS_SCRIPT`,
parsed by :func:`parse_facts`); :func:`run_checks` judges them against the desired
containers (pure). ``--skip-preflight CHECK`` drops the checks a user knowingly skips.
"""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from ..errors import PreflightError, UsageError
from ..spec import CACHE_TARGETS, ContainerSpec

CHECKS = ("docker", "nvidia", "gpus", "arch", "disk", "port", "memory", "engines", "hf_token")
# vLLM's default share of the GPU when a model sets neither a share nor a KV-cache size.
VLLM_DEFAULT_UTILIZATION = 0.9
# Other inference engines on a GB10 compete for the same unified memory (one engine per Spark).
_ENGINE = (r"(^|/)(vllm|ollama|llama-server|text-generation-launcher|tritonserver)( |$)"
           r"|-m (vllm|sglang)[. ]")
GIB_KIB = 1024 * 1024
MIN_FREE_DOCKER_GIB_NEW_IMAGE = 25  # a vLLM CUDA image unpacks to ~20 GiB
MIN_FREE_DOCKER_GIB = 2
MIN_FREE_CACHE_GIB = 10
# Orgs whose repos are commonly gated on Hugging Face (no hub access here to ask).
GATED_PREFIXES = ("meta-llama/", "mistralai/", "google/gemma", "google/medgemma")

_MARK = "@@spark-stack@@"
FACTS_SCRIPT = "; ".join(
    [
        f"echo '{_MARK} home'; printf '%s\\n' \"$HOME\"",
        f"echo '{_MARK} docker'; docker version --format '{{{{json .}}}}' 2>&1; "
        f"echo \"{_MARK} rc $?\"",
        f"echo '{_MARK} runtimes'; docker info --format "
        "'{{json .Runtimes}} {{json .DockerRootDir}}' 2>/dev/null",
        f"echo '{_MARK} arch'; uname -m",
        f"echo '{_MARK} nvidia'; nvidia-smi --query-gpu=index,name,memory.total,memory.used,"
        "utilization.gpu --format=csv,noheader,nounits 2>&1; "
        f"echo \"{_MARK} rc $?\"",
        f"echo '{_MARK} meminfo'; cat /proc/meminfo",
        f"echo '{_MARK} df'; df -Pk \"$HOME\" "
        "\"$(docker info --format '{{.DockerRootDir}}' 2>/dev/null || echo /)\" 2>/dev/null",
        f"echo '{_MARK} listening'; (ss -ltnH 2>/dev/null || netstat -ltn 2>/dev/null)",
        f"echo '{_MARK} hftoken'; "
        "test -s \"$HOME/.cache/huggingface/token\" && echo yes || echo no",
        # Engines outside containers (ollama, a hand-run vLLM), then running containers with
        # the stack label each carries; this script's own shell is left out by its marker.
        f"echo '{_MARK} engines'; "
        f"pgrep -af '{_ENGINE}' 2>/dev/null | while read -r pid args; do "
        f"case \"$args\" in *{_MARK}*) continue;; esac; "
        "grep -qE 'docker|containerd|kubepods' /proc/$pid/cgroup 2>/dev/null && continue; "
        "printf 'process %s %s\\n' \"$pid\" \"$(printf '%s' \"$args\" | cut -c1-120)\"; done; "
        "docker ps --format 'container {{.Names}} {{.Image}} "
        "{{.Label \"io.spark-stack.stack\"}}' 2>/dev/null",
    ]
)


@dataclass(frozen=True)
class Gpu:
    index: str
    name: str
    memory_total_mib: float | None
    memory_used_mib: float | None
    utilization: float | None


@dataclass(frozen=True)
class HostFacts:
    home: str = ""
    docker_ok: bool = False
    docker_output: str = ""
    server_version: str = ""
    api_version: str = ""
    runtimes: tuple[str, ...] = ()
    docker_root: str = ""
    arch: str = ""
    nvidia_ok: bool = False
    nvidia_output: str = ""
    gpus: tuple[Gpu, ...] = ()
    mem_total_kib: int = 0
    mem_available_kib: int = 0
    free_kib: Mapping[str, int] = field(default_factory=dict)  # mount point → free KiB
    listening_ports: frozenset[int] = frozenset()
    hf_token_on_host: bool = False
    # ("process", "PID ARGS", "") or ("container", "NAME IMAGE", its stack label)
    engines: tuple[tuple[str, str, str], ...] = ()

    def free_at(self, path: str) -> int | None:
        """Free KiB of the filesystem holding ``path`` (longest mount point prefix)."""
        best: tuple[int, int] | None = None
        for mount, free in self.free_kib.items():
            prefix = mount.rstrip("/") + "/"
            if (path + "/").startswith(prefix) or mount == "/":
                if best is None or len(mount) > best[0]:
                    best = (len(mount), free)
        return None if best is None else best[1]


@dataclass(frozen=True)
class PreflightCheck:
    name: str
    ok: bool
    message: str
    fix: str | None = None


def _sections(text: str) -> dict[str, list[str]]:
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith(_MARK + " "):
            key = line[len(_MARK) + 1:].strip()
            if key.startswith("rc ") and current is not None:
                current.append(line[len(_MARK) + 1:].strip())
                continue
            current = sections.setdefault(key, [])
        elif current is not None:
            current.append(line)
    return sections


def _rc(lines: list[str]) -> tuple[int, list[str]]:
    codes = [line for line in lines if line.startswith("rc ")]
    body = [line for line in lines if not line.startswith("rc ")]
    return (int(codes[-1][3:]) if codes else 1), body


def _float(text: str) -> float | None:
    try:
        return float(text.strip())
    except ValueError:
        return None


def parse_facts(text: str) -> HostFacts:
    """Parse :data:`FACTS_SCRIPT`'s output (pure)."""
    sec = _sections(text)
    docker_rc, docker_lines = _rc(sec.get("docker", []))
    server_version = api_version = ""
    docker_ok = False
    for line in docker_lines:
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict):
            server = data.get("Server") or {}
            server_version = str(server.get("Version", ""))
            api_version = str(server.get("ApiVersion", ""))
            docker_ok = docker_rc == 0 and bool(server_version)
    runtimes: tuple[str, ...] = ()
    docker_root = ""
    for line in sec.get("runtimes", []):
        raw, _, root = line.partition(" ")
        try:
            runtimes = tuple(sorted(json.loads(raw) or {}))
            docker_root = str(json.loads(root)) if root else ""
        except ValueError:
            continue
    nvidia_rc, nvidia_lines = _rc(sec.get("nvidia", []))
    gpus = []
    if nvidia_rc == 0:
        for line in nvidia_lines:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 5:
                gpus.append(Gpu(parts[0], parts[1], _float(parts[2]), _float(parts[3]),
                                _float(parts[4])))
    meminfo = {}
    for line in sec.get("meminfo", []):
        key, _, value = line.partition(":")
        number = value.strip().split(" ")[0]
        if number.isdigit():
            meminfo[key.strip()] = int(number)
    free: dict[str, int] = {}
    for line in sec.get("df", [])[1:]:
        parts = line.split()
        if len(parts) >= 6 and parts[3].isdigit():
            free[parts[5]] = int(parts[3])
    ports: set[int] = set()
    for line in sec.get("listening", []):
        parts = line.split()
        # ss: State Recv-Q Send-Q Local:Port Peer:Port; netstat: Proto Recv-Q Send-Q Local …
        for token in parts[3:4]:
            port = token.rpartition(":")[2]
            if port.isdigit():
                ports.add(int(port))
    home_lines = sec.get("home", [])
    return HostFacts(
        home=home_lines[0].strip() if home_lines else "",
        docker_ok=docker_ok,
        docker_output="\n".join(docker_lines).strip(),
        server_version=server_version,
        api_version=api_version,
        runtimes=runtimes,
        docker_root=docker_root,
        arch=(sec.get("arch") or [""])[0].strip(),
        nvidia_ok=nvidia_rc == 0 and bool(gpus),
        nvidia_output="\n".join(nvidia_lines).strip(),
        gpus=tuple(gpus),
        mem_total_kib=meminfo.get("MemTotal", 0),
        mem_available_kib=meminfo.get("MemAvailable", 0),
        free_kib=free,
        listening_ports=frozenset(ports),
        hf_token_on_host=(sec.get("hftoken") or ["no"])[0].strip() == "yes",
        engines=tuple(_engines(sec.get("engines", []))),
    )


def _engines(lines: list[str]) -> list[tuple[str, str, str]]:
    found = []
    for line in lines:
        kind, _, rest = line.strip().partition(" ")
        if kind == "process" and rest:
            found.append(("process", rest, ""))
        elif kind == "container":
            name, _, tail = rest.partition(" ")
            image, _, stack = tail.partition(" ")
            if re.search(r"vllm|ollama|sglang|text-generation|llama|tritonserver", image):
                found.append(("container", f"{name} ({image})", stack.strip()))
    return found


def other_engines(facts: HostFacts, stack: str) -> list[str]:
    """Inference engines on the host that are not this stack's containers."""
    return [what for kind, what, owner in facts.engines
            if kind == "process" or owner != stack]


def docker_arch(machine: str) -> str:
    """``uname -m`` → docker's architecture name."""
    return {"aarch64": "arm64", "arm64": "arm64", "x86_64": "amd64", "amd64": "amd64"}.get(
        machine, machine)


def validate_skips(skips: Collection[str]) -> frozenset[str]:
    unknown = sorted(set(skips) - set(CHECKS))
    if unknown:
        raise UsageError(f"unknown preflight check(s): {', '.join(unknown)}",
                         fix=f"choose from: {', '.join(CHECKS)}")
    return frozenset(skips)


def run_checks(
    facts: HostFacts,
    specs: Sequence[ContainerSpec],
    *,
    gpu_memory_utilization: Mapping[str, float],
    image_archs: Mapping[str, str | None],
    own_ports: Collection[int],
    hf_token_in_env: Mapping[str, bool],
    skip: Collection[str] = (),
) -> list[PreflightCheck]:
    """Every check's result for ``specs`` on this host, in :data:`CHECKS` order."""
    results: list[PreflightCheck] = []
    host = "the host"

    def add(name: str, ok: bool, message: str, fix: str | None = None) -> None:
        if name not in skip:
            results.append(PreflightCheck(name, ok, message, None if ok else fix))

    if not facts.docker_ok:
        text = facts.docker_output.splitlines()
        first = next((line for line in text if line.strip()), "no output")
        add("docker", False, f"docker is not usable on {host}: {first}", _docker_fix(first))
        return results
    add("docker", True, f"docker {facts.server_version} (API {facts.api_version})")
    wants_gpu = [s for s in specs if s.gpus != "none"]
    if wants_gpu:
        names = ", ".join(s.model for s in wants_gpu)
        add("nvidia", "nvidia" in facts.runtimes,
            f"NVIDIA container runtime: {'present' if 'nvidia' in facts.runtimes else 'MISSING'}"
            f" (docker runtimes: {', '.join(facts.runtimes) or 'none'}; wanted by {names})",
            "install nvidia-container-toolkit on the host and run `sudo nvidia-ctk runtime "
            "configure --runtime=docker && sudo systemctl restart docker`, or set gpus: none")
        detail = facts.nvidia_output.splitlines()[0] if facts.nvidia_output else "no GPU listed"
        add("gpus", facts.nvidia_ok,
            f"{len(facts.gpus)} GPU(s): {', '.join(g.name for g in facts.gpus)}"
            if facts.nvidia_ok else f"nvidia-smi finds no GPU on {host}: {detail}",
            "install the NVIDIA driver on the host (nvidia-smi must work), or set gpus: none")
    for image, arch in sorted(image_archs.items()):
        if arch is not None and "arch" not in skip:
            results.append(arch_check(facts, image, arch))
    for spec in specs:
        missing_image = image_archs.get(spec.image, "") is None
        need_gib = MIN_FREE_DOCKER_GIB_NEW_IMAGE if missing_image else MIN_FREE_DOCKER_GIB
        root = facts.docker_root or "/"
        free = facts.free_at(root)
        if free is not None:
            add("disk", free >= need_gib * GIB_KIB,
                f"{free / GIB_KIB:.1f} GiB free for images at {root} (need {need_gib})",
                "free disk space on the host (`docker system prune`), or skip with "
                "--skip-preflight disk")
        hf = next((m for m in spec.mounts if m.target == CACHE_TARGETS["huggingface"]), None)
        if hf is not None and facts.home:
            path = facts.home + hf.source[1:] if hf.source.startswith("~") else hf.source
            free = facts.free_at(path)
            if free is not None:
                add("disk", free >= MIN_FREE_CACHE_GIB * GIB_KIB,
                    f"{free / GIB_KIB:.1f} GiB free for the model cache at {path} "
                    f"(need {MIN_FREE_CACHE_GIB})",
                    "free disk space on the host or point cache.huggingface elsewhere")
    for spec in specs:
        taken = spec.host_port in facts.listening_ports and spec.host_port not in own_ports
        add("port", not taken,
            f"port {spec.host_port} on {host} is {'in use' if taken else 'free'}"
            f" (model {spec.model})",
            f"stop what listens on port {spec.host_port} on the host (`ss -ltnp "
            f"'sport = :{spec.host_port}'`), or change the model's port")
    if wants_gpu:
        others = other_engines(facts, specs[0].stack)
        add("engines", not others,
            "other inference engines on the host: " + "; ".join(others) if others
            else "no other inference engine on the host",
            "one engine per Spark: its unified memory is shared — stop the others "
            "(`docker stop NAME`, `sudo systemctl stop ollama`), or --skip-preflight engines")
    total_util = sum(u for m, u in gpu_memory_utilization.items()
                     if any(s.model == m and s.gpus != "none" for s in specs))
    if total_util and facts.mem_total_kib:
        need = total_util * facts.mem_total_kib
        ok = need <= facts.mem_available_kib
        add("memory", ok,
            f"gpu_memory_utilization {total_util:g} wants {need / GIB_KIB:.1f} GiB; "
            f"{facts.mem_available_kib / GIB_KIB:.1f} GiB is available (unified memory)",
            "lower gpu_memory_utilization (0.4-0.5 on a Spark), stop other GPU containers, or "
            "drop the page cache (`sync; echo 3 | sudo tee /proc/sys/vm/drop_caches`)")
    for spec in specs:
        repo = spec.command[0] if spec.command else ""
        if repo.startswith(GATED_PREFIXES):
            ok = hf_token_in_env.get(spec.model, False) or facts.hf_token_on_host
            add("hf_token", ok,
                f"{repo} is a gated repo; HF token {'found' if ok else 'MISSING'}",
                "set env: {HF_TOKEN: '${HF_TOKEN}'} on the model and export HF_TOKEN, or run "
                "`huggingface-cli login` on the host")
    return results


def arch_check(facts: HostFacts, image: str, arch: str) -> PreflightCheck:
    """Whether ``image`` (of docker architecture ``arch``) runs on the host."""
    host_arch = docker_arch(facts.arch)
    ok = arch == host_arch
    return PreflightCheck("arch", ok, f"image {image} is {arch}; the host is {host_arch}",
                       None if ok else "use a multi-arch or arm64 image (vllm/vllm-openai "
                       "v0.20+ tags are multi-arch)")


def _docker_fix(first_line: str) -> str:
    lowered = first_line.lower()
    if "command not found" in lowered or "not found" in lowered:
        return "install docker on the host (https://docs.docker.com/engine/install/)"
    if "permission denied" in lowered:
        return "add the SSH user to the docker group on the host: `sudo usermod -aG docker $USER`"
    if "cannot connect" in lowered or "is the docker daemon running" in lowered:
        return "start the docker daemon on the host: `sudo systemctl start docker`"
    return "run `docker version` on the host and fix what it reports"


def raise_failures(results: Sequence[PreflightCheck]) -> None:
    failed = [r for r in results if not r.ok]
    if not failed:
        return
    first = failed[0]
    more = f" (and {len(failed) - 1} more failed check(s))" if len(failed) > 1 else ""
    names = ", ".join(sorted({r.name for r in failed}))
    raise PreflightError(
        f"preflight {first.name}: {first.message}{more}",
        fix=f"{first.fix}; or skip knowingly with --skip-preflight {names.split(', ')[0]}"
        if first.fix else f"--skip-preflight {names}",
    )
