"""A fast stand-in for `vllm serve` with scripted, deterministic answers.

It speaks vLLM's OpenAI-compatible wire format for a Qwen3.5/3.6 model served with
``--tool-call-parser qwen3_coder --reasoning-parser qwen3 --enable-auto-tool-choice``:
streamed reasoning in ``delta.reasoning``, qwen3_coder tool-call deltas, usage chunks,
vLLM's error bodies and its startup and failure log lines. Standard library only, relative
imports only: the directory can be copied anywhere as a top-level package.

Run it like vLLM::

    python -m spark_stack.simulator serve Qwen/Qwen3.6-35B-A3B --port 8000 \\
        --reasoning-parser qwen3 --tool-call-parser qwen3_coder --enable-auto-tool-choice

or in-process: ``with start_in_thread(["MODEL", "--port", "0"]) as sim: sim.url``.

Scripted answers (first match wins; the "last user text" is the text of the last message
with role ``user``):

0. A user or assistant text holds ``run each: A | B | C`` (a task of several commands): with
   N steps done — tool results in the request plus the largest ``[sim-progress K]`` a summary
   recorded — the next step's tool call; when all ran, ``All n commands ran. TASK DONE``; and
   when the last text is Claude Code's compaction instruction ("create a detailed summary
   of …"), a summary that keeps the task and ``[sim-progress N]`` (a compacted session resumes
   where it was, as a real model's summary would let it).
1. The last message is a tool result (role ``tool``): ``The command printed: <its text>``,
   finish ``stop`` — or the ``after_tool`` object of the SIM_SCRIPT (below), if it has one.
2. The last user text contains ``SIM_SCRIPT:`` followed by a JSON object, with any of:
   ``reasoning``, ``content`` (strings); ``tool_calls`` (list of ``{"name", "arguments"}``);
   ``chunk_chars`` (characters per streamed delta, default 4; one delta = one token);
   ``delay_ms`` (between stream chunks); ``die_after_chunks`` (drop the connection after N
   ``data:`` events, no ``[DONE]``); ``http_status`` + ``error_message`` (+ ``error_type``):
   answer that error in vLLM's shape; ``resend_id``, ``multi_index_chunk``,
   ``reasoning_content`` (quirks, below); ``prompt_tokens`` (report this prompt size, also
   for the context-length check); ``after_tool`` (the script for the turn after the tool
   results).
3. A tool named ``X`` is offered and the last user text contains ``Call the X tool with the
   arguments {…}`` (a JSON object): one call to ``X`` with those arguments.
4. Tools are offered and the last user text contains ``run: <command>``: one call to the tool
   named ``Bash`` (else the first tool) with ``{"command": <command>, "description": ...}``,
   finish ``tool_calls``.
5. The last user text contains ``What is 12*17?``: ``204``.
6. Otherwise: ``Hello from the vLLM simulator (<model>). Your message had <n> words.``

Answers 1 and 3-6 think first (a short ``reasoning``) when a reasoning parser is set and
thinking is on (``chat_template_kwargs.enable_thinking`` per request, else
``--default-chat-template-kwargs``). Without ``--reasoning-parser`` the thinking stays in
the content, closed by ``</think>``, as with the real model.

Environment:

- ``VLLM_API_KEY`` (or ``--api-key``): require ``Authorization: Bearer KEY`` on ``/v1/*``.
- ``VLLM_SIM_FLAGS_FILE`` (or ``--sim-flags-file``): a ``vllm-flags-*.json``; any other option
  is refused like argparse does (exit 2).
- ``VLLM_SIM_STARTUP_SECONDS`` (or ``--sim-startup-seconds``; default 0.3): how long the
  startup log takes before the port opens.
- ``VLLM_SIM_FAIL``: ``gpu_memory``, ``kv_cache``, ``oom``, ``no_kernel``, ``gated``,
  ``engine_dead`` (print vLLM's failure lines, exit 1) or ``hang`` (never open the port).
- ``VLLM_SIM_BENCH_CHUNKS=N``: every chat answer is N content chunks, no reasoning, no delay.
- ``VLLM_SIM_QUIRKS`` (or ``--sim-quirks``): comma list of ``resend_id`` (repeat the tool-call
  id on every argument delta), ``multi_index_chunk`` (finish one call and start the next in
  one chunk), ``reasoning_content`` (the pre-0.17 field name; also ``--sim-reasoning-content``),
  ``wrong_tool`` (every call goes to another offered tool) and ``leak_markup`` (every call
  comes out as ``<tool_call><function=…>`` markup in the text, finish ``stop``: the Spark's
  silent tool-call failure).

- ``VLLM_SIM_KV_CACHE_TOKENS``: the simulated KV cache's size (default 4 × max model length).
- ``VLLM_SIM_PREFILL_MS_PER_1K`` (or ``--sim-prefill-ms-per-1k-tokens``; default 0): prefill
  time per 1000 prompt tokens the prefix cache did not serve, slept before the first token
  (one prompt at a time, as prefill is compute-bound; counted in the TTFT histogram), so a
  prompt whose prefix is cached answers sooner.

With ``--enable-prompt-tokens-details`` (as vLLM) the usage of a whole answer (non-streamed, or
the final chunk with ``stream_options.include_usage``) carries ``prompt_tokens_details:
{"cached_tokens": N}`` when N, the prompt tokens its prefix cache served, is not zero.

``GET /metrics`` exposes vLLM's own metrics (requests running and waiting under
``--max-num-seqs``, KV-cache use, prefix-cache queries and hits, prompt and generation tokens,
TTFT, and speculative decoding's drafts and acceptance with ``--speculative-config``), counted
from the requests it serves (see :mod:`.metrics`), plus ``vllm_sim_cancelled_requests_total``,
the streams stopped because the client went away.
"""

from __future__ import annotations

from .config import SimConfig, build_config
from .flags import FlagSpec, ServeArgs, UsageError, load_spec, parse_serve_args
from .server import SimHandle, config_from_argv, main, serve, start_in_thread

__all__ = [
    "FlagSpec",
    "ServeArgs",
    "SimConfig",
    "SimHandle",
    "UsageError",
    "build_config",
    "config_from_argv",
    "load_spec",
    "main",
    "parse_serve_args",
    "serve",
    "start_in_thread",
]
