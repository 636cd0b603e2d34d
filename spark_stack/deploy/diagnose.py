"""Known vLLM failure signatures → a one-line diagnosis and a fix (pure).

The signatures come from ``research/vllm-on-spark.md``; the most specific come first, since
one failed start prints several (every engine failure ends in "EngineCore failed to start").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..stack.lint import SPARK_MAX_GPU_MEMORY_UTILIZATION

# A fix never asks for more than `validate`'s lint allows on the Spark's unified memory.
_RAISE_SHARE = (f"raise gpu_memory_utilization, at most to {SPARK_MAX_GPU_MEMORY_UTILIZATION} "
                "(validate warns above that on a Spark)")


@dataclass(frozen=True)
class Diagnosis:
    key: str
    message: str
    fix: str
    evidence: str = ""  # the log line that matched

    def line(self) -> str:
        return self.message


@dataclass(frozen=True)
class Signature:
    key: str
    pattern: re.Pattern[str]
    message: str
    fix: str


def _sig(key: str, pattern: str, message: str, fix: str) -> Signature:
    return Signature(key, re.compile(pattern, re.IGNORECASE), message, fix)


SIGNATURES: tuple[Signature, ...] = (
    # GB10 failure lines (research notes, "Updates, late 2026"), each with its source.
    _sig("cutlass_fp4_gemm", r"Failed to run cutlass FP4 gemm on sm120",
         "the image's CUTLASS FP4 kernels fail on the GB10 (sm120; vllm #30163)",
         "use vllm/vllm-openai:v0.28.0 or newer (NGC 25.11 / vLLM 0.11 cannot run NVFP4 MoE)"),
    _sig("sm120_only_kernel", r"This kernel only supports sm120",
         "a kernel in the image does not match the GB10 (eugr #143)",
         "use the upstream vllm/vllm-openai:v0.28.0 image (or newer) built for CUDA 13 / sm121"),
    _sig("illegal_instruction", r"cudaErrorIllegalInstruction",
         "an NVFP4 kernel hit an illegal instruction (fixed by vLLM PR #38423, 2026-03)",
         "use a vLLM image from after 2026-03: vllm/vllm-openai:v0.28.0 or newer"),
    _sig("invalid_activation", r"Invalid activation type",
         "FlashInfer's CUTLASS MoE does not support this model's activation (vllm PR #39825)",
         "set moe_backend: marlin"),
    _sig("cudnn_fp8_kv", r"CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER",
         "cuDNN failed with the fp8 KV cache on the GB10 (dgx-spark-playbooks #107)",
         "set kv_cache_dtype: auto, or use a newer image"),
    _sig("xid_illegal_memory",
         r"Xid\b.*\b31\b.*MMU Fault|an illegal memory access was encountered",
         "the GPU hit an illegal memory access (Xid 31; seen with MTP under sustained load, "
         "eugr #308, vllm #40756)",
         "remove speculative (MTP) from the model, or use a newer image"),
    _sig("nv_no_memory", r"NV_ERR_NO_MEMORY",
         "the driver ran out of unified memory although MemAvailable looked fine (vllm #56824)",
         "lower gpu_memory_utilization or set kv_cache_memory_bytes, stop other GPU users, "
         "and start with --drop-caches"),
    _sig("qwen3_xml_parser", r"qwen3xml_tool_parser.*not well-formed",
         "the qwen3_xml tool parser failed on the model's output (NVIDIA/NemoClaw PR #6551)",
         "set tool_call_parser: qwen3_coder"),
    # Two Sparks (research/two-sparks.md): the ranks of a model across hosts fail to meet.
    _sig("tp_exceeds_gpus", r"Tensor parallel size \((?P<detail>\d+)\) exceeds available GPUs",
         "vLLM saw fewer GPUs than tensor_parallel_size {detail}: the other node never joined "
         "(a link-local 169.254.x address was picked, dgx-spark-playbooks #63)",
         "give each CX7 port a static address in cluster.link (not 169.254.x) and check the "
         "link with `spark-stack doctor`"),
    _sig("ibv_reg_mr", r"ibv_reg_mr.*(?:ENOMEM|Cannot allocate memory)",
         "NCCL could not register memory for RDMA (the kernel has CmaTotal: 0)",
         "boot the hosts with a CMA reservation (cma= on the kernel command line) or unset "
         "nccl_ib_hca to use sockets"),
    _sig("nccl", r"NCCL error|ncclSystemError|ncclInternalError|ncclRemoteError|"
         r"ncclUnhandledCudaError|NCCL WARN (?P<detail>.*)",
         "NCCL failed between the nodes {detail}",
         "check the link (`spark-stack doctor`), that cluster.link names each host's CX7 "
         "interface, nccl_ib_hca, and remove a stale /etc/nccl.conf on the hosts"),
    _sig("gloo", r"Gloo connectFullMesh failed|\[Gloo\].*(?:[Tt]imed out|refused)|"
         r"gloo.*(?:Connection refused|Timed out)",
         "GLOO could not connect the ranks over the link",
         "check that cluster.link's interface is up on both hosts with the addresses given "
         "(`spark-stack doctor`)"),
    _sig("rendezvous", r"DistNetworkError|TCPStore.*(?:timed out|Connection refused)|"
         r"Timed out after \d+ seconds waiting for clients",
         "a rank could not reach the head's master address and port over the link",
         "check the head's link address (cluster.link) and that master_port is free and not "
         "firewalled on the head (`spark-stack doctor`)"),
    _sig("unknown_flag", r"error: unrecognized arguments: (?P<detail>.*)",
         "vLLM does not know the flag(s) {detail} (not in this vLLM version)",
         "remove them from extra_args, or use an image whose vLLM has them"),
    _sig("bad_argument", r"error: argument (?P<detail>--[\w-]+: .*)",
         "vLLM rejected an argument: {detail}",
         "fix that setting in the stack file"),
    _sig("gpu_memory", r"Free memory on device .* less than desired GPU memory utilization",
         "not enough free GPU memory for gpu_memory_utilization",
         "lower gpu_memory_utilization (0.4-0.5 on a Spark), stop other GPU containers, "
         "or drop the page cache (`sync; echo 3 | sudo tee /proc/sys/vm/drop_caches`)"),
    _sig("kv_cache_max_len", r"max seq len .* larger than the available KV cache memory",
         "the KV cache is too small for max_model_len",
         f"lower max_model_len, or {_RAISE_SHARE}"),
    _sig("kv_cache", r"No available memory for the cache blocks|"
         r"Available KV cache memory: -",
         "no memory left for the KV cache",
         f"lower max_model_len or use a smaller model, or {_RAISE_SHARE}"),
    _sig("oom", r"OutOfMemoryError|CUDA out of memory|NVRM: .*Out of memory",
         "the GPU ran out of memory",
         "lower gpu_memory_utilization, max_model_len or max_num_seqs, or stop other GPU users"),
    _sig("no_kernel", r"no kernel image is available for execution on the device",
         "the image's CUDA build has no kernels for this GPU",
         "use a CUDA 13 vLLM image built for the GB10 (vllm/vllm-openai:v0.24.0 or newer)"),
    _sig("ptxas", r"ptxas fatal\s*:\s*Value 'sm_121a' is not defined",
         "Triton's bundled ptxas is too old for sm_121a",
         "use a newer CUDA 13 vLLM image"),
    _sig("moe_backend", r"MoE backend '(?P<detail>[\w]+)' does not support",
         "MoE backend {detail} does not support this checkpoint",
         "pick another moe_backend (marlin for NVIDIA's NVFP4 checkpoints)"),
    _sig("gated", r"GatedRepoError|Cannot access gated repo|401 Client Error|403 Client Error",
         "Hugging Face refused the model download (gated repo or missing/invalid token)",
         "accept the model's licence on huggingface.co and pass HF_TOKEN: "
         "env: {HF_TOKEN: '${HF_TOKEN}'}"),
    # Found by running vLLM 0.32's real engine (tests/e2e/test_real_vllm.py), its own wording.
    _sig("shm", r"Insufficient space in /dev/shm",
         "the container's /dev/shm is too small for vLLM's shared memory",
         "set ipc: host on the model (or shm_size: 16gb)"),
    _sig("max_model_len_over_model",
         r"User-specified max_model_len \((?P<detail>\d+)\) is greater than the derived "
         r"max_model_len",
         "max_model_len {detail} is more than the model supports (its config.json's "
         "max_position_embeddings)",
         "lower max_model_len to at most the model's max_position_embeddings"),
    _sig("model_not_found",
         r"LocalEntryNotFoundError|RepositoryNotFoundError|Repo id must be in the form|"
         r"Invalid repository ID or local directory",
         "the model is neither a directory in the container nor a repository in the HF cache "
         "(and the Hub is not reachable)",
         "check `model` (a Hugging Face repo id, or a path that a `mounts` entry puts in the "
         "container), and that the host's HF cache is mounted (cache.huggingface)"),
    _sig("port_in_use", r"\[Errno 98\] (?:error while attempting to bind on address "
         r"(?P<detail>\(.*?\)): )?[Aa]ddress already in use",
         "the server's port is already in use (something else listens there) {detail}",
         "stop what listens there (`ss -ltnp`), or give the model another port"),
    _sig("engine_dead", r"EngineCore failed to start|EngineDeadError|"
         r"Engine core initialization failed",
         "the vLLM engine failed to start",
         "read the log lines above the failure for the root cause"),
)


def diagnose(lines: Sequence[str]) -> Diagnosis | None:
    """The most specific known signature found in ``lines``, or None."""
    for signature in SIGNATURES:
        for line in lines:
            match = signature.pattern.search(line)
            if match is None:
                continue
            detail = match.groupdict().get("detail") or ""
            message = signature.message.format(detail=detail.strip()).strip()
            return Diagnosis(signature.key, message,
                             signature.fix, line.strip())
    return None


def diagnose_exit(lines: Sequence[str], *, exit_code: int | None, oom_killed: bool,
                  restarts: int) -> Diagnosis:
    """Why a container stopped: the log signature first, then what docker knows."""
    found = diagnose(lines)
    if found is not None:
        return found
    if oom_killed:
        return Diagnosis("oom_killed", "the container was killed by the kernel's OOM killer",
                         "lower gpu_memory_utilization or max_model_len; check `free -g`")
    if restarts > 0:
        return Diagnosis("restart_loop", f"the container keeps restarting ({restarts} restarts)",
                         "read the log above; `spark-stack logs` shows all of it")
    code = "" if exit_code is None else f" with code {exit_code}"
    return Diagnosis("exited", f"the container exited{code} before serving",
                     "read the log above; `spark-stack logs` shows all of it")
