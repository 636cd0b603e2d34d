"""`spark-stack bench`: sizes, statistics, prompts and a real run against simulator + proxy."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_stack.bench import (
    FALLBACK_CHARS_PER_TOKEN,
    PromptSize,
    calibrate,
    parse_concurrency,
    parse_sizes,
    percentile,
    prompt_text,
    run_bench,
)
from spark_stack.cli import main
from spark_stack.deployment import resolve
from spark_stack.errors import UsageError
from spark_stack.proxy.config import ProxyConfig, Upstream
from spark_stack.proxy.daemon import start_background, stop_background
from spark_stack.simulator import SimHandle, start_in_thread
from spark_stack.simulator.tokenizer import count_tokens
from spark_stack.smoke import Endpoints, ModelTarget, endpoints_from_proxy_config
from spark_stack.stack.loader import load_stack_text
from tests.helpers import free_port


def test_parse_sizes() -> None:
    assert parse_sizes("short, 8k,25K,1500,0.5k") == [
        PromptSize("short", 0), PromptSize("8k", 8000), PromptSize("25k", 25000),
        PromptSize("1500", 1500), PromptSize("0.5k", 500),
    ]  # fmt: skip
    for bad in ("long", "8m", "0", ""):
        with pytest.raises(UsageError):
            parse_sizes(bad)


def test_parse_concurrency() -> None:
    assert parse_concurrency("1,4,16") == [1, 4, 16]
    for bad in ("0", "a", "1,,2", ""):
        with pytest.raises(UsageError):
            parse_concurrency(bad)


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([], 50) is None
    assert percentile([3.0], 90) == 3.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.5
    assert percentile([10.0, 20.0, 30.0, 40.0, 50.0], 90) == pytest.approx(46.0)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=30),
    st.floats(0, 100),
    st.floats(0, 100),
)
def test_percentile_is_bounded_and_monotonic(values: list[float], q1: float, q2: float) -> None:
    low, high = sorted((q1, q2))
    p_low, p_high = percentile(values, low), percentile(values, high)
    assert p_low is not None and p_high is not None
    assert min(values) <= p_low <= p_high + 1e-6 <= max(values) + 1e-6


def test_prompts_are_unique_and_sized_for_the_tokenizer() -> None:
    size = PromptSize("8k", 8000)
    first, second = prompt_text(size, 4.0, "aaaa"), prompt_text(size, 4.0, "bbbb")
    assert first.startswith("Request aaaa.") and second.startswith("Request bbbb.")
    assert first[len("Request aaaa."):] == second[len("Request bbbb."):]
    # The simulator's tokenizer is 4 bytes per token: the prompt lands just under the target.
    assert 7900 <= count_tokens(first) <= 8000
    short = prompt_text(PromptSize("short", 0), 4.0, "cccc")
    assert short.startswith("Request cccc. ") and count_tokens(short) < 40


def test_calibrate_falls_back_without_a_tokenizer() -> None:
    model = ModelTarget("m", "m", "http://vllm/v1", None, reasoning=False, tools=False)
    transport = httpx.MockTransport(lambda request: httpx.Response(404))
    with httpx.Client(transport=transport) as client:
        assert calibrate(client, model) == FALLBACK_CHARS_PER_TOKEN
    counted = httpx.MockTransport(lambda request: httpx.Response(200, json={"count": 1000}))
    with httpx.Client(transport=counted) as client:
        assert calibrate(client, model) == 8.0  # the 8,000-character sample


@pytest.fixture(scope="module")
def stack_behind_proxy(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ProxyConfig, SimHandle]]:
    flags = ["--reasoning-parser", "qwen3", "--tool-call-parser", "qwen3_coder",
             "--enable-auto-tool-choice", "--served-model-name", "qwen36"]
    with start_in_thread(
        ["Qwen/Qwen3.6-35B-A3B", "--host", "127.0.0.1", "--port", "0", *flags],
        env={"VLLM_SIM_STARTUP_SECONDS": "0"},
    ) as sim:
        config = ProxyConfig(
            port=free_port(), token="t0k",
            upstreams={"qwen": Upstream("qwen", f"{sim.url}/v1", "qwen36")},
        ).with_own_names()
        state = tmp_path_factory.mktemp("bench-proxy")
        start_background(config, state)
        try:
            yield config, sim
        finally:
            stop_background(state)


STACK = "name: b\nmodels: [{name: qwen, kind: simulator, port: 18899, max_model_len: 32768}]\n"


def test_run_bench_measures_both_paths_and_skips_what_cannot_fit(
    stack_behind_proxy: tuple[ProxyConfig, SimHandle],
) -> None:
    config, _ = stack_behind_proxy
    stack = load_stack_text(STACK).stack
    cells = []
    report = run_bench(
        "b",
        endpoints_from_proxy_config(resolve(stack), config),
        sizes=parse_sizes("short,2k,8k"),
        concurrency=[1, 3],
        requests=3,
        max_tokens=32,
        max_model_len=lambda name: 4096,
        on_cell=cells.append,
    )
    assert report.ok
    assert [(c.size, c.concurrency) for c in report.cells] == [
        ("short", 1), ("short", 3), ("2k", 1), ("2k", 3), ("8k", 1), ("8k", 3),
    ]  # fmt: skip
    assert cells == report.cells
    data = report.to_dict()
    for cell in data["results"][:4]:
        assert cell["skipped"] is None
        for path in ("direct", "proxy"):
            stats = cell[path]
            assert (stats["ok"], stats["failed"]) == (3, 0)
            assert 0 < stats["ttft_ms"]["p50"] <= stats["ttft_ms"]["p90"]
        assert cell["proxy_added_ttft_ms"] == pytest.approx(
            cell["proxy"]["ttft_ms"]["p50"] - cell["direct"]["ttft_ms"]["p50"], abs=0.11
        )
    two_k = data["results"][2]
    # Calibrated with the simulator's /tokenize; both paths see the same prompt size.
    assert 1950 <= two_k["direct"]["prompt_tokens"] <= 2010
    assert abs(two_k["proxy"]["prompt_tokens"] - two_k["direct"]["prompt_tokens"]) <= 20
    assert data["results"][4]["skipped"] == "prompt + output exceed max_model_len 4096"
    assert json.loads(json.dumps(data)) == data


def test_failed_requests_are_counted_with_their_reason(
    stack_behind_proxy: tuple[ProxyConfig, SimHandle],
) -> None:
    config, _ = stack_behind_proxy
    stack = load_stack_text(STACK).stack
    good = endpoints_from_proxy_config(resolve(stack), config)
    report = run_bench(
        "b", Endpoints(good.proxy_url, "wrong-token", good.models),
        sizes=parse_sizes("short"), concurrency=[2], requests=2, max_tokens=16,
    )
    cell = report.cells[0].to_dict()
    assert not report.ok
    assert (cell["direct"]["ok"], cell["proxy"]["ok"], cell["proxy"]["failed"]) == (2, 0, 2)
    assert cell["proxy"]["errors"][0].startswith("HTTP 401 authentication_error")
    assert cell["proxy_added_ttft_ms"] is None


def test_bench_refuses_a_stack_that_is_not_up(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    stack_file = tmp_path / "s.yaml"
    stack_file.write_text(STACK)
    assert main(["-s", str(stack_file), "bench", "--json"]) == 4
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["message"] == "stack 'b' is not up (its proxy is not running)"
    assert main(["-s", str(stack_file), "bench", "--sizes", "huge"]) == 2


def test_the_table_fits_80_columns_without_cutting_numbers_or_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io

    from rich.console import Console

    from spark_stack.bench import BenchReport, Cell
    from spark_stack.cli import cmd_bench

    report = BenchReport("lab", 8, 128)
    for size, tokens in (("short", 43), ("8k", 7997), ("25k", 24997)):
        for level in (1, 4):
            cell = Cell("qwen3.6-35b-a3b-nvfp4-redhat", size, level)
            cell.stats["direct"].ttft_ms += [1234.0, 5678.0]
            cell.stats["proxy"].ttft_ms += [1236.0, 5690.0]
            cell.stats["direct"].decode_tps += [45.0]
            cell.stats["proxy"].decode_tps += [44.0]
            cell.stats["direct"].prompt_tokens += [tokens]
            report.cells.append(cell)
    report.cells.append(Cell("qwen3.6-35b-a3b-nvfp4-redhat", "100k", 1,
                             skipped="does not fit max_model_len 65536"))
    buffer = io.StringIO()
    monkeypatch.setattr(cmd_bench, "console", lambda stderr=False: Console(
        file=buffer, width=80, highlight=False, soft_wrap=True))
    cmd_bench._print_table(report)
    text = buffer.getvalue()
    assert "…" not in text
    assert max(len(line) for line in text.splitlines()) <= 80
    for value in ("24,997", "3,456 / 5,234", "3,463 / 5,245", "+7.0 ms", "45 / 44",
                  "TTFT direct", "TTFT proxy", "decode tok/s", "failed",
                  "model qwen3.6-35b-a3b-nvfp4-redhat",
                  "100k c=1 skipped: does not fit max_model_len 65536"):
        assert value in text, value
