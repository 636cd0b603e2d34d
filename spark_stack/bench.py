"""`spark-stack bench`: the source document's latency table, measured on your stack.

For each model, prompt size and concurrency level: time to first token (p50/p90 over N
requests) and the decode rate, straight to vLLM (OpenAI chat completions) and through the
proxy (Anthropic Messages, as Claude Code sends them), and what the proxy adds to TTFT.

Requests of the two paths alternate in one queue that ``concurrency`` workers drain, so both
see the same load. Every prompt starts with a unique line, so vLLM's prefix cache never
serves a measured prefill from an earlier request. Prompt sizes are calibrated with the
server's own tokenizer (``POST /tokenize``) when it has one; the table shows the prompt
tokens the server reported.
"""

from __future__ import annotations

import math
import random
import re
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from .errors import UsageError
from .smoke.endpoints import Endpoints, ModelTarget
from .smoke.wire import CallResult, anthropic_call, openai_headers, openai_stream_call

Via = Literal["direct", "proxy"]
PATHS: tuple[Via, ...] = ("direct", "proxy")
DEFAULT_SIZES = ("short", "8k", "25k")
DEFAULT_CONCURRENCY = (1, 4)
DEFAULT_REQUESTS = 8
DEFAULT_MAX_TOKENS = 128
FALLBACK_CHARS_PER_TOKEN = 4.0
SHORT_TASK = "Write a short story about a lighthouse keeper who finds a message in a bottle."
LONG_TASK = "Summarise the notes above in one long paragraph."
_SIZE = re.compile(r"^(\d+(?:\.\d+)?)(k?)$", re.IGNORECASE)
_WORDS = (
    "the build runs tests on every commit and the report lists each failing module with its "
    "owner while the deploy step waits for a green signal from the staging cluster before it "
    "rolls the new image out to one host at a time so that a bad release can be stopped early "
    "and the logs of every container are kept for a week in case someone needs to trace a "
    "request through the proxy to the model server and back again"
).split()


@dataclass(frozen=True)
class PromptSize:
    """A named prompt size: ``short`` (a one-line task) or a target in tokens."""

    label: str
    tokens: int  # 0 for short


def parse_sizes(text: str) -> list[PromptSize]:
    """``short,8k,25k`` → sizes; ``8k`` is 8,000 tokens, a bare number is tokens."""
    sizes = []
    for raw in (part.strip() for part in text.split(",")):
        if raw.lower() == "short":
            sizes.append(PromptSize("short", 0))
            continue
        match = _SIZE.match(raw)
        if not match:
            raise UsageError(
                f"prompt size {raw!r} is not 'short', a number of tokens or e.g. '8k'",
                fix="use --sizes short,8k,25k",
            )
        tokens = int(float(match.group(1)) * (1000 if match.group(2) else 1))
        if tokens <= 0:
            raise UsageError(f"prompt size {raw!r} must be positive", fix="use e.g. 8k")
        sizes.append(PromptSize(raw.lower(), tokens))
    return sizes


def parse_concurrency(text: str) -> list[int]:
    try:
        levels = [int(part) for part in text.split(",")]
    except ValueError:
        levels = []
    if not levels or any(level < 1 for level in levels):
        raise UsageError(
            f"concurrency {text!r} is not a comma list of positive numbers",
            fix="use e.g. --concurrency 1,4",
        )
    return levels


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0–100) with linear interpolation, None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def filler(chars: int, seed: int) -> str:
    """Deterministic prose of about ``chars`` characters (words shuffled per sentence)."""
    rng = random.Random(seed)
    out: list[str] = []
    length = 0
    while length < chars:
        words = rng.sample(_WORDS, 18)
        sentence = " ".join(words).capitalize() + ". "
        out.append(sentence)
        length += len(sentence)
    return "".join(out)[:chars]


def prompt_text(size: PromptSize, chars_per_token: float, nonce: str) -> str:
    """The user message for one request: a unique first line, then the padding and the task."""
    head = f"Request {nonce}."
    if size.tokens == 0:
        return f"{head} {SHORT_TASK}"
    # The chat template and the task take a few dozen tokens; the notes take the rest.
    notes = filler(max(0, int((size.tokens - 40) * chars_per_token)), seed=size.tokens)
    return f"{head}\nNotes:\n{notes}\n\n{LONG_TASK}"


def calibrate(client: httpx.Client, model: ModelTarget) -> float:
    """Characters per token of the filler for this model's tokenizer (vLLM's /tokenize)."""
    sample = filler(8000, seed=1)
    root = model.base_url.rstrip("/").removesuffix("/v1")
    try:
        response = client.post(
            f"{root}/tokenize",
            json={"model": model.served_name, "prompt": sample},
            headers=openai_headers(model.api_key),
        )
        count = response.json().get("count") if response.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        count = None
    if isinstance(count, int) and count > 0:
        return len(sample) / count
    return FALLBACK_CHARS_PER_TOKEN


@dataclass(frozen=True)
class Job:
    path: Via
    text: str


def proxy_body(model: ModelTarget, text: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": model.name,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "messages": [{"role": "user", "content": text}],
    }


@dataclass
class PathStats:
    """One path of one cell: the requests' TTFTs and decode rates."""

    ttft_ms: list[float] = field(default_factory=list)
    decode_tps: list[float] = field(default_factory=list)
    prompt_tokens: list[int] = field(default_factory=list)
    failures: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, call: CallResult) -> None:
        ttft = call.ttft_ms
        if call.error is not None or ttft is None:
            self.failures += 1
            reason = call.error or "no token came back"
            if reason not in self.errors:
                self.errors.append(reason)
            return
        self.ttft_ms.append(ttft)
        rate = call.decode_tokens_per_s()
        if rate is not None:
            self.decode_tps.append(rate)
        if call.input_tokens is not None:
            self.prompt_tokens.append(call.input_tokens)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": len(self.ttft_ms),
            "failed": self.failures,
            "prompt_tokens": _median_int(self.prompt_tokens),
            "ttft_ms": {"p50": _r(percentile(self.ttft_ms, 50)),
                        "p90": _r(percentile(self.ttft_ms, 90))},
            "decode_tokens_per_s": _r(percentile(self.decode_tps, 50)),
            "errors": self.errors[:3],
        }


@dataclass
class Cell:
    """One (model, prompt size, concurrency) measurement, both paths."""

    model: str
    size: str
    concurrency: int
    stats: dict[Via, PathStats] = field(
        default_factory=lambda: {path: PathStats() for path in PATHS}
    )
    skipped: str | None = None

    @property
    def failures(self) -> int:
        return sum(s.failures for s in self.stats.values())

    def proxy_added_ms(self) -> float | None:
        direct = percentile(self.stats["direct"].ttft_ms, 50)
        proxy = percentile(self.stats["proxy"].ttft_ms, 50)
        return None if direct is None or proxy is None else proxy - direct

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "size": self.size,
            "concurrency": self.concurrency,
            "skipped": self.skipped,
            "direct": self.stats["direct"].to_dict(),
            "proxy": self.stats["proxy"].to_dict(),
            "proxy_added_ttft_ms": _r(self.proxy_added_ms()),
        }


@dataclass
class BenchReport:
    stack: str
    requests: int
    max_tokens: int
    cells: list[Cell] = field(default_factory=list)
    total_s: float = 0.0

    @property
    def ok(self) -> bool:
        return all(cell.failures == 0 for cell in self.cells)

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "stack": self.stack,
            "requests": self.requests,
            "max_tokens": self.max_tokens,
            "results": [cell.to_dict() for cell in self.cells],
            "total_s": round(self.total_s, 2),
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def _median_int(values: list[int]) -> int | None:
    middle = percentile([float(v) for v in values], 50)
    return None if middle is None else round(middle)


def _call(
    client: httpx.Client, ends: Endpoints, model: ModelTarget, job: Job, max_tokens: int
) -> CallResult:
    if job.path == "direct":
        body = model.direct_chat_body(job.text, max_tokens)
        return openai_stream_call(client, model.base_url, model.api_key, body)
    body = proxy_body(model, job.text, max_tokens)
    return anthropic_call(client, ends.proxy_url, ends.proxy_token, body)


def measure_cell(
    client: httpx.Client,
    ends: Endpoints,
    model: ModelTarget,
    size: PromptSize,
    concurrency: int,
    *,
    requests: int,
    max_tokens: int,
    chars_per_token: float,
) -> Cell:
    """``requests`` per path, alternating direct and proxy, ``concurrency`` at a time."""
    cell = Cell(model.name, size.label, concurrency)
    jobs = [
        Job(path, prompt_text(size, chars_per_token, uuid.uuid4().hex[:12]))
        for _ in range(requests)
        for path in PATHS
    ]
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        calls = pool.map(lambda job: (job, _call(client, ends, model, job, max_tokens)), jobs)
        for job, call in calls:
            cell.stats[job.path].add(call)
    return cell


def run_bench(
    stack_name: str,
    ends: Endpoints,
    *,
    sizes: Sequence[PromptSize],
    concurrency: Sequence[int],
    requests: int = DEFAULT_REQUESTS,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    max_model_len: Callable[[str], int | None] = lambda _: None,
    timeout: float = 600.0,
    on_cell: Callable[[Cell], None] | None = None,
) -> BenchReport:
    """Measure every (model, size, concurrency) cell; a warm-up request per path first.

    ``max_model_len(model)`` lets sizes that cannot fit the model's context be skipped.
    """
    report = BenchReport(stack_name, requests, max_tokens)
    started = time.perf_counter()
    limits = httpx.Limits(max_connections=max(concurrency) * 2 + 4)
    with httpx.Client(timeout=timeout, limits=limits, trust_env=False) as client:
        for model in ends.models:
            chars_per_token = calibrate(client, model)
            for path in PATHS:
                _call(client, ends, model, Job(path, f"Request warm-up. {SHORT_TASK}"), 8)
            for size in sizes:
                for level in concurrency:
                    limit = max_model_len(model.name)
                    if limit is not None and size.tokens + max_tokens > limit:
                        cell = Cell(model.name, size.label, level)
                        cell.skipped = f"prompt + output exceed max_model_len {limit}"
                    else:
                        cell = measure_cell(
                            client, ends, model, size, level, requests=requests,
                            max_tokens=max_tokens, chars_per_token=chars_per_token,
                        )
                    report.cells.append(cell)
                    if on_cell is not None:
                        on_cell(cell)
    report.total_s = time.perf_counter() - started
    return report
