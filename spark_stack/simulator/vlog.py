"""The log lines vLLM prints while it starts, serves and fails (pure text builders).

vLLM's format is ``LEVEL MM-DD HH:MM:SS [file.py:line] message``, prefixed by the process
name when the line comes from a child process, e.g. ``(EngineCore_DP0 pid=87) INFO ...``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .config import SimConfig

API_PID = 1
ENGINE_PID = 87
API = f"(APIServer pid={API_PID}) "
ENGINE = f"(EngineCore_DP0 pid={ENGINE_PID}) "

# Sizes of a Qwen3.6-35B-A3B NVFP4 load on a GB10, so the numbers look like the real thing.
TOTAL_GIB = 119.7
WEIGHTS_GIB = 21.4
KV_BYTES_PER_TOKEN = 20480


def log_line(
    level: str, where: str, message: str, prefix: str = "", now: float | None = None
) -> str:
    """One vLLM log line (without the newline)."""
    stamp = time.strftime("%m-%d %H:%M:%S", time.localtime(now))
    return f"{prefix}{level} {stamp} [{where}] {message}"


@dataclass(frozen=True)
class Phase:
    """A group of log lines printed after `weight` of the startup time has passed."""

    weight: float
    lines: tuple[tuple[str, str, str, str], ...]  # (prefix, level, where, message)


def _fmt_int(n: int) -> str:
    return f"{n:,}"


def kv_figures(config: SimConfig) -> tuple[float, int, float]:
    """(available KV GiB, KV tokens, max concurrency) from the utilisation and max len."""
    available = max(0.0, config.gpu_memory_utilization * TOTAL_GIB - WEIGHTS_GIB - 2.1)
    tokens = int(available * (1 << 30) / KV_BYTES_PER_TOKEN) // 16 * 16
    concurrency = tokens / config.max_model_len if config.max_model_len else 0.0
    return round(available, 2), tokens, concurrency


def startup_phases(config: SimConfig) -> tuple[Phase, ...]:
    """The startup log, split into phases; the port opens after the last one."""
    available, tokens, concurrency = kv_figures(config)
    s = max(config.startup_seconds, 0.0)
    args = dict(config.non_default_args)
    return (
        Phase(
            0.0,
            (
                ("", "INFO", "__init__.py:241", "Automatically detected platform cuda."),
                (API, "INFO", "api_server.py:1885", f"vLLM API server version {config.version}"),
                (API, "INFO", "utils.py:253", f"non-default args: {args}"),
            ),
        ),
        Phase(
            0.0,
            (
                (
                    API,
                    "INFO",
                    "model.py:631",
                    "Resolved architecture: Qwen3_5MoeForConditionalGeneration",
                ),
                (API, "INFO", "model.py:1811", f"Using max model len {config.max_model_len}"),
                (
                    ENGINE,
                    "INFO",
                    "core.py:93",
                    f"Initializing a V1 LLM engine (v{config.version})"
                    f" with config: model='{config.model}', served_model_name="
                    f"{config.primary_name}, max_seq_len={config.max_model_len}",
                ),
                (
                    ENGINE,
                    "INFO",
                    "gpu_model_runner.py:2862",
                    f"Starting to load model {config.model}...",
                ),
            ),
        ),
        Phase(
            0.45,
            (
                (
                    ENGINE,
                    "INFO",
                    "default_loader.py:314",
                    f"Loading weights took {0.45 * s:.2f} seconds",
                ),
                (
                    ENGINE,
                    "INFO",
                    "gpu_model_runner.py:2893",
                    f"Model loading took {WEIGHTS_GIB} GiB and {0.47 * s:.6f} seconds",
                ),
            ),
        ),
        Phase(
            0.25,
            (
                (
                    ENGINE,
                    "INFO",
                    "backends.py:608",
                    f"Dynamo bytecode transform time: {0.1 * s:.2f} s",
                ),
                (ENGINE, "INFO", "monitor.py:34", f"torch.compile took {0.25 * s:.2f} s in total"),
                (
                    ENGINE,
                    "INFO",
                    "gpu_worker.py:298",
                    f"Available KV cache memory: {available} GiB",
                ),
                (
                    ENGINE,
                    "INFO",
                    "kv_cache_utils.py:1087",
                    f"GPU KV cache size: {_fmt_int(tokens)} tokens",
                ),
                (
                    ENGINE,
                    "INFO",
                    "kv_cache_utils.py:1091",
                    f"Maximum concurrency for {_fmt_int(config.max_model_len)} tokens per request: "
                    f"{concurrency:.2f}x",
                ),
            ),
        ),
        Phase(
            0.3,
            (
                (
                    ENGINE,
                    "INFO",
                    "gpu_model_runner.py:3725",
                    f"Graph capturing finished in {0.2 * s:.0f} secs, took 0.52 GiB",
                ),
                (
                    ENGINE,
                    "INFO",
                    "core.py:215",
                    "init engine (profile, create kv cache, warmup model) took "
                    f"{0.55 * s:.2f} seconds",
                ),
            ),
        ),
    )


def serving_lines(config: SimConfig, port: int) -> tuple[tuple[str, str, str, str], ...]:
    """Printed once the port is bound."""
    return (
        (
            API,
            "INFO",
            "api_server.py:1856",
            f"Starting vLLM API server 0 on http://{config.display_host}:{port}",
        ),
        (API, "INFO", "launcher.py:34", "Available routes are:"),
        (API, "INFO", "launcher.py:42", "Route: /health, Methods: GET"),
        (API, "INFO", "launcher.py:42", "Route: /tokenize, Methods: POST"),
        (API, "INFO", "launcher.py:42", "Route: /v1/models, Methods: GET"),
        (API, "INFO", "launcher.py:42", "Route: /v1/chat/completions, Methods: POST"),
    )


def uvicorn_lines() -> tuple[str, ...]:
    return (
        f"{API}INFO:     Started server process [{API_PID}]",
        f"{API}INFO:     Waiting for application startup.",
        f"{API}INFO:     Application startup complete.",
    )


def _traceback(error: str, frames: tuple[tuple[str, int, str, str], ...]) -> list[str]:
    lines = [f"{ENGINE}Traceback (most recent call last):"]
    for path, lineno, func, code in frames:
        lines.append(f'{ENGINE}  File "{path}", line {lineno}, in {func}')
        lines.append(f"{ENGINE}    {code}")
    lines.append(f"{ENGINE}{error}")
    return lines


_SITE = "/usr/local/lib/python3.12/dist-packages/vllm"


def failure_lines(config: SimConfig) -> tuple[int, list[str]]:
    """(how many normal phases to print first, the failure lines) for VLLM_SIM_FAIL."""
    fail = config.fail
    available, tokens, _ = kv_figures(config)
    need_gib = round(config.max_model_len * KV_BYTES_PER_TOKEN / (1 << 30), 2)
    if fail == "gpu_memory":
        free = 31.42
        error = (
            f"ValueError: Free memory on device cuda:0 ({free}/{TOTAL_GIB} GiB) on startup is "
            f"less than desired GPU memory utilization ({config.gpu_memory_utilization}, "
            f"{round(config.gpu_memory_utilization * TOTAL_GIB, 2)} GiB). Decrease GPU memory "
            "utilization or reduce GPU memory used by other processes."
        )
        frames = (
            (
                f"{_SITE}/v1/worker/gpu_worker.py",
                239,
                "init_device",
                "self.requested_memory = request_memory(init_snapshot, self.cache_config)",
            ),
        )
        return 2, _engine_failed(_traceback(error, frames))
    if fail == "kv_cache":
        small = round(min(available, need_gib / 2), 2)
        estimate = int(small * (1 << 30) / KV_BYTES_PER_TOKEN) // 16 * 16
        error = (
            "ValueError: To serve at least one request with the models's max seq len "
            f"({config.max_model_len}), ({need_gib} GiB KV cache is needed, which is larger than "
            f"the available KV cache memory ({small} GiB). Based on the available memory, the "
            f"estimated maximum model length is {estimate}. Try increasing "
            "`gpu_memory_utilization` or decreasing `max_model_len` when initializing the engine."
        )
        frames = (
            (
                f"{_SITE}/v1/core/kv_cache_utils.py",
                686,
                "check_enough_kv_cache_memory",
                "raise ValueError(",
            ),
        )
        return 4, _engine_failed(_traceback(error, frames))
    if fail == "oom":
        error = (
            "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a "
            f"total capacity of {TOTAL_GIB} GiB of which 1.12 GiB is free. Including non-PyTorch "
            "memory, this process has 108.31 GiB memory in use. Of the allocated memory 104.77 "
            "GiB is allocated by PyTorch, and 1.95 GiB is reserved by PyTorch but unallocated. If "
            "reserved but unallocated memory is large try setting "
            "PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True to avoid fragmentation.  See "
            "documentation for Memory Management  "
            "(https://pytorch.org/docs/stable/notes/cuda.html#environment-variables)"
        )
        frames = (
            (
                f"{_SITE}/v1/worker/gpu_model_runner.py",
                3512,
                "profile_run",
                "hidden_states, last_hidden_states = self._dummy_run(",
            ),
        )
        return 3, _engine_failed(_traceback(error, frames))
    if fail == "no_kernel":
        error = (
            "torch.AcceleratorError: CUDA error: no kernel image is available for execution on "
            "the device"
        )
        frames = (
            (
                f"{_SITE}/v1/worker/gpu_model_runner.py",
                3512,
                "profile_run",
                "hidden_states, last_hidden_states = self._dummy_run(",
            ),
        )
        tail = [
            f"{ENGINE}CUDA kernel errors might be asynchronously reported at some other API "
            "call, so the stacktrace below might be incorrect.",
            f"{ENGINE}For debugging consider passing CUDA_LAUNCH_BLOCKING=1",
            f"{ENGINE}Compile with `TORCH_USE_CUDA_DSA` to enable device-side assertions.",
        ]
        return 3, _engine_failed(_traceback(error, frames) + tail)
    if fail == "gated":
        url = f"https://huggingface.co/{config.model}/resolve/main/config.json"
        lines = [
            f"{API}Traceback (most recent call last):",
            f'{API}  File "/usr/local/lib/python3.12/dist-packages/huggingface_hub/utils/'
            '_http.py", line 409, in hf_raise_for_status',
            f"{API}    response.raise_for_status()",
            f"{API}requests.exceptions.HTTPError: 401 Client Error: Unauthorized for url: {url}",
            "",
            f"{API}The above exception was the direct cause of the following exception:",
            "",
            f"{API}huggingface_hub.errors.GatedRepoError: 401 Client Error. (Request ID: "
            "Root=1-6744a1b2-0f1e2d3c4b5a69788796a5b4;8c2d0f1e-3b4a-4c5d-9e6f-7a8b9c0d1e2f)",
            "",
            f"{API}Cannot access gated repo for url {url}.",
            f"{API}Access to model {config.model} is restricted. You must have access to it and "
            "be authenticated to access it. Please log in.",
        ]
        return 1, lines
    if fail == "engine_dead":
        error = "RuntimeError: Worker failed with error 'CUDA driver initialization failed'"
        frames = (
            (
                f"{_SITE}/v1/executor/multiproc_executor.py",
                602,
                "worker_main",
                "worker = WorkerProc(*args, **kwargs)",
            ),
        )
        return 2, _engine_failed(_traceback(error, frames))
    return 0, []


def _engine_failed(traceback: list[str]) -> list[str]:
    """The lines vLLM wraps around an error raised while building the engine."""
    head = [log_line("ERROR", "core.py:866", "EngineCore failed to start.", ENGINE)]
    tail = [
        f"{API}Traceback (most recent call last):",
        f'{API}  File "/usr/local/bin/vllm", line 10, in <module>',
        f"{API}    sys.exit(main())",
        f"{API}RuntimeError: Engine core initialization failed. See root cause above. "
        "Failed core proc(s): {}",
    ]
    return head + traceback + tail
