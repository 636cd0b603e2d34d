"""Memory and disk the proxy keeps are bounded by bytes: the tool caches, the log file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from spark_stack.proxy.bytecache import ByteBoundedCache
from spark_stack.proxy.config import ProxyConfig
from spark_stack.proxy.translate_request import (
    _TRANSLATED,
    TOOL_CACHE_BYTES,
    BodyParser,
    translate_request,
)

MB = 1 << 20


def body_with_tools(description: str) -> bytes:
    tool = {"name": "T", "description": description, "input_schema": {"type": "object"}}
    return orjson.dumps({"model": "m", "max_tokens": 1, "tools": [tool],
                         "messages": [{"role": "user", "content": "hi"}]})


def test_distinct_megabyte_tool_sets_stay_within_the_cache_budget() -> None:
    from spark_stack.proxy.config import Upstream

    upstream = Upstream("q", "http://127.0.0.1:9/v1", "served")
    parser = BodyParser()
    for i in range(40):  # 40 MB of distinct tools; count-bounded caches kept them all
        body, tools_json = parser.loads(body_with_tools(f"{i}" + "x" * MB))
        translate_request(body, upstream, tools_json)
    assert parser._known.bytes <= TOOL_CACHE_BYTES
    assert _TRANSLATED.bytes <= TOOL_CACHE_BYTES
    assert len(parser._known) < 4 and len(_TRANSLATED) < 4


def test_claude_code_sized_tools_are_still_cached() -> None:
    parser = BodyParser()
    raw = body_with_tools("y" * 70_000)
    parser.loads(raw)
    assert len(parser._known) == 1
    body, _ = parser.loads(raw)  # the shortcut path answers the same
    assert body == orjson.loads(raw)


def test_byte_bounded_cache_evicts_oldest_and_skips_oversized() -> None:
    cache: ByteBoundedCache[str, int] = ByteBoundedCache(100)
    cache.put("a", 1, 40)
    cache.put("b", 2, 40)
    assert cache.get("a") == 1  # a is now the most recent
    cache.put("c", 3, 40)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    cache.put("huge", 4, 101)
    assert cache.get("huge") is None and cache.bytes == 80


def test_limits_round_trip_through_the_config_file() -> None:
    config = ProxyConfig(header_timeout=2.5, max_connections=7, log_backups=5)
    again = ProxyConfig.from_json(config.to_json())
    assert again == config
    assert ProxyConfig.from_dict({}).upstream_timeout == 600.0


def test_the_log_file_rotates_by_size_and_keeps_a_few(tmp_path: Path) -> None:
    log = tmp_path / "proxy.log"
    script = (
        "from spark_stack.proxy.accesslog import AccessLog, clip\n"
        "log = AccessLog(max_bytes=10_000, backups=2)\n"
        "for i in range(2000): log.write(f'line {i} model={clip(\"m\" * 5000)!r}')\n"
        "import sys; print('last words', file=sys.stderr)\n"
    )
    with open(log, "ab") as out:
        subprocess.run([sys.executable, "-c", script], stdout=out, stderr=subprocess.STDOUT,
                       check=True)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["proxy.log", "proxy.log.1", "proxy.log.2"]
    for name in files:
        size = (tmp_path / name).stat().st_size
        assert size <= 10_000 + 300, (name, size)
    assert (tmp_path / "proxy.log").read_text().endswith("last words\n")
    assert "line 1999 " in (tmp_path / "proxy.log").read_text() + (
        tmp_path / "proxy.log.1").read_text()
    assert "…(5000 chars)" in (tmp_path / "proxy.log.1").read_text()
    assert (tmp_path / "proxy.log").stat().st_mode & 0o777 == 0o600
