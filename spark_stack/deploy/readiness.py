"""Wait until a vLLM server really serves, showing its startup phase (logic + HTTP probes).

Phases come from the server's own log lines (:func:`phase_of`); ready means ``GET /health``
answers 200, ``/v1/models`` lists the served name and one short real completion gives the
known answer (``/health`` alone does not prove sane output). The loop fails fast when the
process exits, is OOM-killed or restarts, and gives up at the timeout.

A port proves nothing about who answers on it. Where the caller can tell its own process from
another (a simulator says its pid in ``/health``'s :data:`PID_HEADER`), ``identity`` must hold
too; a container is its own proof (docker publishes its port only to it, and refuses to start
it when the port is taken; a node on the host's network is checked by the port preflight).
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .diagnose import Diagnosis, diagnose, diagnose_exit

TEST_PROMPT = "What is 12*17? Answer with the number."
TEST_ANSWER = "204"
POLL_SECONDS = 0.25
HTTP_TIMEOUT = 10.0
COMPLETION_TIMEOUT = 120.0
PID_HEADER = "x-spark-stack-pid"  # the simulator's /health names its process

# (pattern, phase) in startup order; the latest phase whose line has appeared wins.
PHASE_LINES: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(p), phase)
    for p, phase in (
        (r"vLLM API server version|non-default args", "starting"),
        (r"Starting to load model|Loading safetensors|Loading weights", "loading weights"),
        (r"Dynamo bytecode transform|torch\.compile|Compiling a graph", "compiling"),
        (r"Available KV cache memory|GPU KV cache size|CPU KV cache size", "profiling memory"),
        (r"Capturing CUDA graph|Graph capturing", "capturing graphs"),
        (r"init engine \(profile, create kv cache, warmup model\)", "warming up"),
        # "Starting vLLM server on http://…" is vLLM 0.32's wording (its real engine's log).
        (r"Starting vLLM (?:API )?server|Application startup complete", "opening the API"),
    )
)
PHASE_ORDER = ("pulling", "starting", "downloading", *dict.fromkeys(p for _, p in PHASE_LINES),
               "checking health", "checking models", "test completion", "ready")


def phase_of(lines: Sequence[str], current: str = "starting") -> str:
    """The furthest startup phase the log ``lines`` show (never goes backwards)."""
    best = PHASE_ORDER.index(current) if current in PHASE_ORDER else 0
    for line in lines:
        for pattern, phase in PHASE_LINES:
            if pattern.search(line):
                best = max(best, PHASE_ORDER.index(phase))
    return PHASE_ORDER[best]


@dataclass(frozen=True)
class ProcessState:
    """What the runtime knows about the server process."""

    alive: bool
    exit_code: int | None = None
    oom_killed: bool = False
    restarts: int = 0
    status: str = ""


@dataclass(frozen=True)
class Ready:
    elapsed: float


@dataclass(frozen=True)
class Failed:
    reason: str  # "exited" | "timeout" | "bad answer"
    diagnosis: Diagnosis
    elapsed: float
    phase: str


def vllm_auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes
    headers: Mapping[str, str]

    def json(self) -> Any:
        return json.loads(self.body)


class HttpProbe:
    """The three HTTP checks, one step further each call while they pass.

    Plain ``http.client`` on one keep-alive connection: the probe runs on every ``up``, and
    importing an HTTP client library (or loading a CA bundle for a plain-http server) costs
    more than its requests."""

    def __init__(self, base_url: str, served_name: str, api_key: str | None) -> None:
        self.root = base_url.rstrip("/").removesuffix("/v1")
        self.served_name = served_name
        self.headers = vllm_auth_headers(api_key)
        parts = urllib.parse.urlsplit(self.root)
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._conn: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: Any = None,
                timeout: float = HTTP_TIMEOUT) -> Answer | None:
        """One request (``body`` as JSON); None when the server cannot be reached."""
        headers = dict(self.headers)
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for reused in (self._conn is not None, False):
            conn = self._conn or self._connect(timeout)
            conn.timeout = timeout
            if conn.sock is not None:
                conn.sock.settimeout(timeout)
            try:
                conn.request(method, self._prefix + path, body=data, headers=headers)
                answer = conn.getresponse()
                content = answer.read()
            except (OSError, http.client.HTTPException):
                conn.close()
                self._conn = None
                if reused:
                    continue  # a keep-alive connection the server closed meanwhile
                return None
            self._conn = conn
            return Answer(answer.status, content,
                          {k.lower(): v for k, v in answer.getheaders()})
        return None

    def _connect(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            import ssl

            return http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                               context=ssl.create_default_context())
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def health(self) -> bool:
        answer = self.request("GET", "/health")
        return answer is not None and answer.status == 200

    def models(self) -> list[str] | None:
        answer = self.request("GET", "/v1/models")
        if answer is None or answer.status != 200:
            return None
        try:
            return [str(m.get("id")) for m in answer.json().get("data", [])]
        except (ValueError, AttributeError):
            return None

    def completion(self) -> str | None:
        """The answer to the test prompt (thinking off, short), or None when it failed."""
        body = {
            "model": self.served_name,
            "messages": [{"role": "user", "content": TEST_PROMPT}],
            "max_tokens": 32,
            "temperature": 0,
            "chat_template_kwargs": {"enable_thinking": False},
        }
        answer = self.request("POST", "/v1/chat/completions", body, timeout=COMPLETION_TIMEOUT)
        if answer is None or answer.status != 200:
            return None
        try:
            message = answer.json()["choices"][0]["message"]
            return str(message.get("content") or "")
        except (ValueError, KeyError, IndexError, TypeError):
            return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def server_pid(base_url: str) -> int | None:
    """The pid the server at ``base_url`` gives in ``/health``'s :data:`PID_HEADER` (None:
    no answer, or a server that does not say)."""
    probe = HttpProbe(base_url, "", None)
    try:
        answer = probe.request("GET", "/health")
        return None if answer is None else int(answer.headers.get(PID_HEADER, ""))
    except ValueError:
        return None
    finally:
        probe.close()


def answer_is_right(text: str) -> bool:
    return re.search(rf"\b{TEST_ANSWER}\b", text) is not None


class Probe(Protocol):
    """What readiness asks a server (:class:`HttpProbe` over HTTP)."""

    served_name: str

    def health(self) -> bool: ...
    def models(self) -> list[str] | None: ...
    def completion(self) -> str | None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class Progress:
    """Where a start is, told to the reporter on every poll (``changed``: a new phase)."""

    phase: str
    elapsed: float  # since the wait began
    phase_elapsed: float  # since this phase began
    changed: bool
    downloaded: int | None = None  # bytes of the model's files in the host's cache
    download_total: int | None = None  # bytes the model's repo holds, when known


# The download counts as going on while the cache grew within this many seconds.
DOWNLOAD_QUIET_SECONDS = 15.0


def wait_ready(
    *,
    state: Callable[[], ProcessState],
    logs: Callable[[], list[str]],
    probe: Probe,
    timeout: float,
    on_progress: Callable[[Progress], None],
    downloaded: Callable[[], int | None] = lambda: None,
    download_total: Callable[[], int | None] = lambda: None,
    identity: Callable[[], bool] = lambda: True,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Ready | Failed:
    """Poll until ready or failed; ``on_progress`` hears every poll. ``identity`` says whether
    the server that answers is the process being waited for (see the module doc).

    ``timeout`` is how long a start may go without progress — a new phase, or model files
    still arriving in the host's cache (``downloaded``) — so a long first download is never cut
    short while a hang still is. ``download_total`` (a question to the Hub) is asked once,
    when files are seen arriving: a server that already serves never waits for it.
    """
    start = clock()
    log_phase = "starting"
    shown = "starting"
    last_progress = phase_started = start
    size: int | None = None
    grew_at: float | None = None
    total: int | None = None

    def tell(phase: str) -> None:
        nonlocal shown, phase_started, last_progress
        now = clock()
        changed = phase != shown
        if changed:
            shown, phase_started, last_progress = phase, now, now
        on_progress(Progress(phase, now - start, now - phase_started, changed, size, total))

    on_progress(Progress("starting", 0.0, 0.0, True, None, None))
    while True:
        elapsed = clock() - start
        current = state()
        if not current.alive or current.restarts > 0 or current.oom_killed:
            lines = logs()
            return Failed("exited", diagnose_exit(lines, exit_code=current.exit_code,
                                                  oom_killed=current.oom_killed,
                                                  restarts=current.restarts), elapsed, shown)
        sample = downloaded()
        if sample is not None and (size is None or sample > size):
            if size is not None:
                if grew_at is None:
                    total = download_total()
                grew_at = last_progress = clock()
            size = sample
        if probe.health() and identity():
            tell("checking models")
            names = probe.models()
            if names is not None and probe.served_name in names:
                tell("test completion")
                answer = probe.completion()
                if answer is not None:
                    if answer_is_right(answer):
                        tell("ready")
                        return Ready(clock() - start)
                    return Failed("bad answer", Diagnosis(
                        "bad_answer",
                        f"the model answered {answer.strip()[:60]!r} to {TEST_PROMPT!r} "
                        f"(expected {TEST_ANSWER})",
                        "the server runs but its output is wrong: try another moe_backend / "
                        "attention_backend or image"), clock() - start, shown)
        else:
            # The log only while it does not answer: a server that serves (a kept one) is
            # ready without a log read (one request fewer on a no-op `up`).
            log_phase = phase_of(logs(), log_phase)
            downloading = grew_at is not None and clock() - grew_at < DOWNLOAD_QUIET_SECONDS \
                and PHASE_ORDER.index(log_phase) <= PHASE_ORDER.index("loading weights")
            tell("downloading" if downloading else log_phase)
        if clock() - last_progress >= timeout:
            found = diagnose(logs())
            return Failed("timeout", found or Diagnosis(
                "timeout", f"not ready after {timeout:.0f} s without progress (phase: {shown})",
                "a cold start on a Spark takes 10-15 min: raise readiness_timeout or "
                "--timeout; `spark-stack logs` shows where it is"), clock() - start, shown)
        sleep(min(POLL_SECONDS, max(0.0, timeout - (clock() - last_progress))))
