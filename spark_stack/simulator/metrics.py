"""What the simulated engine counts and exposes on ``GET /metrics`` (pure, standard library).

The names, types and labels (``model_name``, ``engine``) are vLLM's own (``vllm/v1/metrics/
loggers.py``, ``vllm/v1/spec_decode/metrics.py``), and every figure is counted from the
requests the simulator really serves:

- ``vllm:num_requests_running`` / ``vllm:num_requests_waiting``: requests generating, and
  requests queued for a slot (``--max-num-seqs``, default 256, as in vLLM);
- ``vllm:kv_cache_usage_perc``: KV blocks held by the running requests (16 tokens a block)
  over the cache's size (``VLLM_SIM_KV_CACHE_TOKENS``, default 4 × ``max_model_len``);
- ``vllm:prefix_cache_queries`` / ``vllm:prefix_cache_hits`` (in tokens): the prompt's full
  16-token blocks found in an LRU of the blocks earlier prompts filled, as vLLM's prefix
  cache does (at most ``len - 1`` tokens hit: the last token is always computed);
- ``vllm:prompt_tokens`` / ``vllm:generation_tokens``, ``vllm:request_success``;
- ``vllm:time_to_first_token_seconds``: from a request's arrival to its first token (the
  queue for a slot included, plus one decoding step when a script sets ``delay_ms``), in
  vLLM's buckets;
- with ``--speculative-config`` (``num_speculative_tokens`` N): ``vllm:spec_decode_num_drafts``,
  ``…_num_draft_tokens``, ``…_num_accepted_tokens``: each decoding step drafts N tokens and
  accepts two in three of them (rounded down), plus the bonus token.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field

from .tokenizer import BYTES_PER_TOKEN

# vLLM's engine FinishReason, each exported (at 0 until it happens) as 0.32 does.
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
BLOCK_TOKENS = 16
TTFT_BUCKETS = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0, 160.0, 640.0, 2560.0,
)  # fmt: skip


class Histogram:
    """A Prometheus histogram: per-bucket counts, sum and count."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.total += value

    def lines(self, name: str, labels: str) -> Iterator[str]:
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            yield f'{name}_bucket{{{labels},le="{bound}"}} {float(running)}'
        running += self.counts[-1]
        yield f'{name}_bucket{{{labels},le="+Inf"}} {float(running)}'
        yield f"{name}_count{{{labels}}} {float(running)}"
        yield f"{name}_sum{{{labels}}} {self.total}"


class PrefixCache:
    """Hashes of full prompt blocks, each chained to the blocks before it (vLLM's scheme),
    least recently used evicted first."""

    def __init__(self, capacity_blocks: int) -> None:
        self.capacity = max(1, capacity_blocks)
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def lookup_and_fill(self, prompt: bytes, prompt_tokens: int) -> int:
        """Tokens of ``prompt`` already cached (full blocks, at most ``prompt_tokens - 1``);
        then cache all of its full blocks."""
        return self.lookup_fill(prompt, prompt_tokens)[0]

    def lookup_fill(self, prompt: bytes, prompt_tokens: int) -> tuple[int, int]:
        """(tokens of ``prompt`` already cached, tokens of the blocks it added to the cache:
        vLLM's ``cached_tokens`` and ``created_cache_tokens``)."""
        block_bytes = BLOCK_TOKENS * BYTES_PER_TOKEN
        full = min(len(prompt) // block_bytes, prompt_tokens // BLOCK_TOKENS)
        chain = 0
        hit_blocks = 0
        created_blocks = 0
        missed = False
        for index in range(full):
            chain = hash((chain, prompt[index * block_bytes : (index + 1) * block_bytes]))
            if not missed and chain in self._blocks:
                hit_blocks += 1
                self._blocks.move_to_end(chain)
                continue
            missed = True
            created_blocks += chain not in self._blocks
            self._blocks[chain] = None
            if len(self._blocks) > self.capacity:
                self._blocks.popitem(last=False)
        most = max(0, prompt_tokens - 1) // BLOCK_TOKENS
        return min(hit_blocks, most) * BLOCK_TOKENS, created_blocks * BLOCK_TOKENS


@dataclass(frozen=True)
class SpecDecode:
    """Draft and acceptance counts of speculative decoding for one answer."""

    drafts: int
    draft_tokens: int
    accepted: int

    @classmethod
    def of(cls, generated: int, per_step: int) -> SpecDecode:
        accept = per_step * 2 // 3
        steps = -(-generated // (accept + 1)) if generated else 0
        return cls(steps, steps * per_step, min(generated - steps, steps * accept))


@dataclass
class Metrics:
    """The engine's counters and gauges (see the module doc)."""

    model: str
    max_num_seqs: int = 256
    kv_cache_tokens: int = 4 * 262144
    spec_tokens: int | None = None
    requests: int = 0
    running: int = 0
    waiting: int = 0
    cancelled: int = 0
    kv_blocks_used: int = 0
    prompt_tokens: int = 0
    generation_tokens: int = 0
    prefix_queries: int = 0
    prefix_hits: int = 0
    drafts: int = 0
    draft_tokens: int = 0
    accepted_tokens: int = 0
    finished: dict[str, int] = field(default_factory=dict)
    ttft: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    prefix_cache: PrefixCache = field(init=False)

    def __post_init__(self) -> None:
        self.prefix_cache = PrefixCache(self.kv_cache_tokens // BLOCK_TOKENS)

    def admitted(
        self, prompt: bytes, prompt_tokens: int, kv_tokens: int
    ) -> tuple[int, int, int]:
        """A request starts generating: count its prompt and prefix-cache lookup; returns the
        KV blocks its ``kv_tokens`` hold (give them back with :meth:`released`), the prompt
        tokens the prefix cache served (vLLM's ``num_cached_tokens``) and those it newly
        cached (``created_cache_tokens``)."""
        self.prompt_tokens += prompt_tokens
        self.prefix_queries += prompt_tokens
        cached, created = self.prefix_cache.lookup_fill(prompt, prompt_tokens)
        self.prefix_hits += cached
        blocks = -(-kv_tokens // BLOCK_TOKENS)
        self.kv_blocks_used += blocks
        return blocks, cached, created

    def released(self, blocks: int) -> None:
        self.kv_blocks_used -= blocks

    def finish(self, reason: str, generated: int) -> None:
        """A request ended: ``reason`` as the API says it (a tool call is the engine's stop)."""
        reason = reason if reason in FINISH_REASONS else "stop"
        self.finished[reason] = self.finished.get(reason, 0) + 1
        self.generation_tokens += generated
        if self.spec_tokens:
            spec = SpecDecode.of(generated, self.spec_tokens)
            self.drafts += spec.drafts
            self.draft_tokens += spec.draft_tokens
            self.accepted_tokens += spec.accepted

    @property
    def kv_cache_usage(self) -> float:
        return min(1.0, self.kv_blocks_used * BLOCK_TOKENS / max(1, self.kv_cache_tokens))

    def render(self) -> str:
        labels = f'engine="0",model_name="{_escape(self.model)}"'
        out: list[str] = []

        def family(name: str, kind: str, doc: str, *samples: str) -> None:
            out.extend((f"# HELP {name} {doc}", f"# TYPE {name} {kind}", *samples))

        def one(name: str, kind: str, doc: str, value: float) -> None:
            sample = f"{name}_total" if kind == "counter" else name
            family(name, kind, doc, f"{sample}{{{labels}}} {float(value)}")

        one("vllm:num_requests_running", "gauge",
            "Number of requests in model execution batches.", self.running)
        one("vllm:num_requests_waiting", "gauge",
            "Number of requests waiting to be processed.", self.waiting)
        one("vllm:kv_cache_usage_perc", "gauge",
            "KV-cache usage. 1 means 100 percent usage.", self.kv_cache_usage)
        one("vllm:prefix_cache_queries", "counter",
            "Prefix cache queries, in terms of number of queried tokens.", self.prefix_queries)
        one("vllm:prefix_cache_hits", "counter",
            "Prefix cache hits, in terms of number of cached tokens.", self.prefix_hits)
        one("vllm:prompt_tokens", "counter", "Number of prefill tokens processed.",
            self.prompt_tokens)
        one("vllm:generation_tokens", "counter", "Number of generation tokens processed.",
            self.generation_tokens)
        family("vllm:request_success", "counter", "Count of successfully processed requests.",
               *(f'vllm:request_success_total{{{labels},finished_reason="{reason}"}} '
                 f"{float(self.finished.get(reason, 0))}"
                 for reason in FINISH_REASONS))
        family("vllm:time_to_first_token_seconds", "histogram",
               "Histogram of time to first token in seconds.",
               *self.ttft.lines("vllm:time_to_first_token_seconds", labels))
        if self.spec_tokens:
            one("vllm:spec_decode_num_drafts", "counter", "Number of spec decoding drafts.",
                self.drafts)
            one("vllm:spec_decode_num_draft_tokens", "counter", "Number of draft tokens.",
                self.draft_tokens)
            one("vllm:spec_decode_num_accepted_tokens", "counter",
                "Number of accepted tokens.", self.accepted_tokens)
        family("vllm_sim_requests", "counter", "Chat completion requests received.",
               f"vllm_sim_requests_total {float(self.requests)}")
        family("vllm_sim_cancelled_requests", "counter",
               "Streams stopped because the client left.",
               f"vllm_sim_cancelled_requests_total {float(self.cancelled)}")
        return "\n".join(out) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
