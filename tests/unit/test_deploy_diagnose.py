"""Known vLLM failure signatures → one-line diagnoses, using the simulator's real failure logs."""

from __future__ import annotations

import pytest

from spark_stack.deploy.diagnose import diagnose, diagnose_exit
from spark_stack.simulator.config import SimConfig
from spark_stack.simulator.vlog import failure_lines


@pytest.mark.parametrize(
    ("failure", "key"),
    [
        ("gpu_memory", "gpu_memory"),
        ("kv_cache", "kv_cache_max_len"),
        ("oom", "oom"),
        ("no_kernel", "no_kernel"),
        ("gated", "gated"),
        ("engine_dead", "engine_dead"),
    ],
)
def test_each_simulated_failure_log_gets_its_specific_diagnosis(failure: str, key: str) -> None:
    _, lines = failure_lines(SimConfig(fail=failure, max_model_len=262144))
    found = diagnose(lines)
    assert found is not None
    assert found.key == key
    assert found.fix
    assert "\n" not in found.message


@pytest.mark.parametrize(
    ("line", "key", "message"),
    [
        ("vllm serve: error: unrecognized arguments: --moe-backend marlin", "unknown_flag",
         "vLLM does not know the flag(s) --moe-backend marlin (not in this vLLM version)"),
        ("vllm serve: error: argument --port: invalid int value: 'x'", "bad_argument",
         "vLLM rejected an argument: --port: invalid int value: 'x'"),
        ("ptxas fatal   : Value 'sm_121a' is not defined for option 'gpu-name'", "ptxas",
         "Triton's bundled ptxas is too old for sm_121a"),
        ("ValueError: NvFp4 MoE backend 'FLASHINFER_CUTLASS' does not support the deployment "
         "configuration", "moe_backend",
         "MoE backend FLASHINFER_CUTLASS does not support this checkpoint"),
        ("INFO gpu_worker.py:298] Available KV cache memory: -3.2 GiB", "kv_cache",
         "no memory left for the KV cache"),
        ("NVRM: Xid (PCI:0000:01:00): 31, Out of memory", "oom", "the GPU ran out of memory"),
    ],
)
def test_single_line_signatures(line: str, key: str, message: str) -> None:
    found = diagnose(["INFO something normal", line])
    assert found is not None
    assert (found.key, found.message, found.evidence) == (key, message, line)


def test_specific_cause_wins_over_the_generic_engine_failure() -> None:
    lines = ["ERROR core.py:866] EngineCore failed to start.",
             "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB."]
    found = diagnose(lines)
    assert found is not None and found.key == "oom"


def test_no_signature_falls_back_to_what_docker_knows() -> None:
    assert diagnose(["INFO all fine"]) is None
    assert diagnose_exit([], exit_code=137, oom_killed=True, restarts=0).key == "oom_killed"
    looping = diagnose_exit([], exit_code=1, oom_killed=False, restarts=4)
    assert (looping.key, looping.message) == (
        "restart_loop", "the container keeps restarting (4 restarts)")
    exited = diagnose_exit([], exit_code=3, oom_killed=False, restarts=0)
    assert exited.message == "the container exited with code 3 before serving"


def test_a_port_already_in_use_is_named_not_an_exit_code() -> None:
    """Seen with a simulator whose port was taken: "the container exited with code 1"."""
    lines = [
        "(APIServer pid=1) ERROR:    [Errno 98] error while attempting to bind on address "
        "('127.0.0.1', 36373): address already in use",
        "(APIServer pid=1) OSError: [Errno 98] Address already in use",
    ]
    found = diagnose_exit(lines, exit_code=1, oom_killed=False, restarts=0)
    assert found.key == "port_in_use"
    assert "('127.0.0.1', 36373)" in found.message and "another port" in found.fix


def test_no_fix_raises_the_memory_share_past_the_lint() -> None:
    from spark_stack.deploy.diagnose import SIGNATURES
    from spark_stack.stack.lint import SPARK_MAX_GPU_MEMORY_UTILIZATION

    for signature in SIGNATURES:
        if "raise gpu_memory_utilization" in signature.fix:
            assert f"at most to {SPARK_MAX_GPU_MEMORY_UTILIZATION}" in signature.fix, signature.key
            assert signature.fix.startswith("lower max_model_len"), signature.key


@pytest.mark.parametrize(
    ("line", "key", "fix_says"),
    [
        ("(EngineCore_DP0 pid=92) RuntimeError: Failed to run cutlass FP4 gemm on sm120. "
         "Error: Error Internal", "cutlass_fp4_gemm", "v0.28.0"),
        ("(EngineCore_DP0 pid=92) RuntimeError: This kernel only supports sm120",
         "sm120_only_kernel", "v0.28.0"),
        ("torch.AcceleratorError: CUDA error: an illegal instruction was encountered "
         "(cudaErrorIllegalInstruction)", "illegal_instruction", "v0.28.0"),
        ("(EngineCore_DP0 pid=92) RuntimeError: Invalid activation type",
         "invalid_activation", "moe_backend: marlin"),
        ("cudnn._compiled_module.cudnnGraphNotSupportedError: "
         "CUDNN_STATUS_EXECUTION_FAILED_CUDA_DRIVER", "cudnn_fp8_kv", "kv_cache_dtype: auto"),
        ("NVRM: Xid (PCI:000f:01:00): 31, pid=5122, name=python3, Ch 00000008, intr 00000000. "
         "MMU Fault", "xid_illegal_memory", "speculative"),
        ("RuntimeError: CUDA error: an illegal memory access was encountered",
         "xid_illegal_memory", "speculative"),
        ("NVRM: nvAssertOkFailedNoLog: Assertion failed: Out of memory [NV_ERR_NO_MEMORY] "
         "(0x00000051)", "nv_no_memory", "--drop-caches"),
        ("ERROR [qwen3xml_tool_parser.py:1021] Error: not well-formed (invalid token): line 1",
         "qwen3_xml_parser", "qwen3_coder"),
    ],
)
def test_every_gb10_failure_line_has_its_diagnosis(line: str, key: str, fix_says: str) -> None:
    found = diagnose(["INFO starting", line, "EngineCore failed to start."])
    assert found is not None and found.key == key
    assert fix_says in found.fix and found.evidence == line.strip()


def test_an_unknown_failure_still_exits_with_what_docker_knows() -> None:
    found = diagnose_exit(["something nobody has seen"], exit_code=1, oom_killed=False,
                          restarts=0)
    assert found.key == "exited" and "logs" in found.fix


# The real engine's own lines (vLLM 0.32, CPU build), as tests/e2e/test_real_vllm.py saw them.
REAL_ENGINE_LINES = [
    ("(EngineCore pid=28) ERROR 12-07 04:20:02 [core.py:1510] RuntimeError: Insufficient space "
     "in /dev/shm for shared-memory allocation: 160 MiB required, 64 MiB free. Increase /dev/shm "
     "(e.g. --shm-size or --ipc=host).", "shm", "ipc: host"),
    ("  Value error, User-specified max_model_len (131072) is greater than the derived "
     "max_model_len (max_position_embeddings=65536.0 or model_max_length=None in model's "
     "config.json). To allow overriding this maximum, set the env var "
     "VLLM_ALLOW_LONG_MAX_MODEL_LEN=1.", "max_model_len_over_model", "lower max_model_len"),
    ("huggingface_hub.errors.LocalEntryNotFoundError: Cannot find an appropriate cached snapshot "
     "folder for the specified revision on the local disk and outgoing traffic has been "
     "disabled.", "model_not_found", "mounts"),
    ("huggingface_hub.errors.HFValidationError: Repo id must be in the form 'repo_name' or "
     "'namespace/repo_name': '/models/not-there'. Use `repo_type` argument if needed.",
     "model_not_found", "mounts"),
    ("vllm serve: error: unrecognized arguments: --no-such-flag", "unknown_flag", "extra_args"),
]


@pytest.mark.parametrize(("line", "key", "fix_says"), REAL_ENGINE_LINES)
def test_the_real_engines_failure_lines_are_diagnosed(line: str, key: str,
                                                       fix_says: str) -> None:
    found = diagnose(["(EngineCore pid=28) ERROR Engine core initialization failed.", line])
    assert found is not None and found.key == key
    assert fix_says in found.fix
    if key == "max_model_len_over_model":
        assert "131072" in found.message
