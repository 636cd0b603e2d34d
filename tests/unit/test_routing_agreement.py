"""One routing table: what `plan --json` shows, what the running proxy's router picks and what
`export litellm` writes agree for every name a client could send.

Each side is read the way its consumer reads it: plan's rows and the LiteLLM entries by small
interpreters written here from the README's rules (exact first, then globs — in order for the
proxy, by LiteLLM's specificity for LiteLLM), the proxy through its own Router on the config
as the daemon reads it back from JSON.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spark_stack.cli import main
from spark_stack.deployment import resolve
from spark_stack.errors import StackFileError, UsageError
from spark_stack.export_litellm import litellm_config, litellm_specificity
from spark_stack.proxy.config import ProxyConfig
from spark_stack.proxy.errors import ProxyError
from spark_stack.proxy.routing import Router
from spark_stack.render import plan_document
from spark_stack.routing import is_glob
from spark_stack.stack.loader import load_stack_text

MODEL_NAMES = ["qwen", "big", "small", "coder", "a", "b"]
SERVED = ["Qwen/Qwen3.6-35B-A3B", "qwen3.6", "coder-30b", None]
PATTERNS = ["claude-opus-4-5", "claude-haiku-4-5", "claude-*", "claude-*haiku*", "*sonnet*",
            "gpt-4", "claude-3-*", "*"]
PROBES = ["claude-opus-4-5", "claude-haiku-4-5", "claude-3-5-sonnet", "claude-sonnet-4-5",
          "gpt-4", "unknown-model", "", "Qwen/Qwen3.6-35B-A3B", "qwen3.6", "coder-30b"]


def _plan_route(rows: list[dict[str, Any]], name: str) -> str | None:
    """The README's rule over plan's rows: the first exact row, else the first glob row."""
    for row in rows:
        if not is_glob(row["pattern"]) and row["pattern"] == name:
            return str(row["model"])
    for row in rows:
        if is_glob(row["pattern"]) and fnmatchcase(name, row["pattern"]):
            return str(row["model"])
    return None


def _litellm_route(config: dict[str, Any], name: str, by_base: dict[str, str]) -> str | None:
    """LiteLLM's rule: an exact model_name, else the most specific matching wildcard."""
    entries = config["model_list"]
    for entry in entries:
        if entry["model_name"] == name:
            return by_base[entry["litellm_params"]["api_base"]]
    globs = [e for e in entries if is_glob(e["model_name"])]
    globs.sort(key=lambda e: litellm_specificity(e["model_name"]), reverse=True)
    for entry in globs:
        if fnmatchcase(name, entry["model_name"]):
            return by_base[entry["litellm_params"]["api_base"]]
    return None


def _proxy_route(router: Router, name: str) -> str | None:
    try:
        return router.resolve(name).name
    except ProxyError:
        return None


@st.composite
def stack_files(draw: st.DrawFn) -> str:
    names = draw(st.lists(st.sampled_from(MODEL_NAMES), min_size=1, max_size=3, unique=True))
    models = []
    for index, name in enumerate(names):
        served = draw(st.sampled_from(SERVED))
        model = {"name": name, "kind": "simulator", "port": 8800 + index}
        if served is not None:
            model["served_name"] = served
        models.append(model)
    routes = draw(st.dictionaries(st.sampled_from(PATTERNS), st.sampled_from(names),
                                  max_size=4))
    proxy: dict[str, Any] = {"routes": routes}
    fallback = draw(st.sampled_from([None, "none", *names]))
    if fallback is not None:
        proxy["fallback"] = fallback
    return yaml.safe_dump({"name": "prop", "models": models, "proxy": proxy})


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(stack_files(), st.lists(st.text(max_size=12), max_size=3))
def test_plan_proxy_and_litellm_route_every_name_alike(text: str, extra: list[str]) -> None:
    try:
        loaded = load_stack_text(text, lint=False)
    except StackFileError as exc:
        # The only refusal the generator can provoke: a route shadowing a model's own name.
        assert "shadows model" in str(exc.problems)
        return
    deployment = resolve(loaded.stack)
    rows = plan_document(loaded, deployment).to_json()["routes"]
    config = ProxyConfig.from_json(deployment.proxy_config({}, None).to_json())
    router = Router(config)
    try:
        exported: dict[str, Any] | None = litellm_config(deployment)
    except UsageError as exc:
        assert "LiteLLM would try" in exc.message
        exported = None
    by_base = {m.endpoint: m.name for m in deployment.models}
    names = {*PROBES, *extra, *(m.name for m in deployment.models),
             *(m.served_name for m in deployment.models), *(r.pattern for r in deployment.routes)}
    for name in names:
        planned = _plan_route(rows, name)
        assert _proxy_route(router, name) == planned, name
        assert (deployment.route(name).model if deployment.route(name) else None) == planned
        if exported is not None:
            assert _litellm_route(exported, name, by_base) == planned, name
        if planned is None:
            assert loaded.stack.proxy.fallback == "none" and "*" not in loaded.stack.proxy.routes


AB = """\
name: ab
models:
  - {name: a, kind: simulator, port: 8801}
  - {name: b, kind: simulator, port: 8802}
proxy:
  routes: {a: b}
"""


def test_a_route_that_shadows_a_model_name_is_refused_where_it_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Regression: plan showed `a → b (route)` and `a → a`, export sent a to b, the proxy to a."""
    path = tmp_path / "ab.yaml"
    path.write_text(AB)
    assert main(["-s", str(path), "plan"]) == 2
    err = capsys.readouterr().err
    assert f"{path}:6:" in err and "route 'a' → 'b' shadows model 'a'" in err
    assert "remove the route" in err


def test_the_catch_all_is_planned_and_fallback_none_answers_404(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "ab.yaml"
    path.write_text(AB.replace("proxy:\n  routes: {a: b}\n", ""))
    assert main(["-s", str(path), "plan", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["routes"]
    assert rows[-1] == {"pattern": "*", "model": "a",
                        "served_name": "Qwen/Qwen3.6-35B-A3B-simulated",
                        "upstream": "http://127.0.0.1:8801/v1", "source": "catch-all"}
    loaded = load_stack_text(AB.replace("  routes: {a: b}\n", "  fallback: none\n"))
    deployment = resolve(loaded.stack)
    assert all(r.origin != "catch-all" for r in deployment.routes)
    with pytest.raises(ProxyError) as caught:
        Router(deployment.proxy_config({}, None)).resolve("claude-sonnet-4-5")
    assert caught.value.status == 404


def test_a_fallback_to_an_unknown_model_is_refused() -> None:
    with pytest.raises(StackFileError, match="proxy fallback 'c' is not a model"):
        load_stack_text(AB.replace("  routes: {a: b}\n", "  fallback: c\n"))


def test_two_models_serving_one_name_warn_and_the_first_keeps_it() -> None:
    text = AB.replace("proxy:\n  routes: {a: b}\n", "")
    loaded = load_stack_text(text)  # both serve the simulator's default name
    assert any("already reaches model 'a'" in w.message for w in loaded.warnings)
    deployment = resolve(loaded.stack)
    served = [r for r in deployment.routes if r.origin == "served name"]
    assert [(r.pattern, r.model) for r in served] == [("Qwen/Qwen3.6-35B-A3B-simulated", "a")]


def test_export_refuses_an_order_litellm_would_change() -> None:
    loaded = load_stack_text(AB.replace("{a: b}", '{"claude-*": a, "claude-*haiku*": b}'))
    with pytest.raises(UsageError, match="would try route 'claude-\\*haiku\\*' before") as caught:
        litellm_config(resolve(loaded.stack))
    assert caught.value.fix == "move 'claude-*haiku*' above 'claude-*' in proxy.routes"


def test_an_ipv6_host_is_bracketed_in_plan_and_in_the_proxy_config(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "v6.yaml"
    path.write_text(yaml.safe_dump({
        "name": "v6", "host": {"address": "fe80::1%eth0"},
        "models": [{"name": "q", "image": "vllm/vllm-openai:v0.28.0", "model": "Qwen/Qwen3-8B",
                    "max_model_len": 65536, "gpu_memory_utilization": 0.4}]}))
    assert main(["-s", str(path), "plan", "--json"]) == 0
    planned = json.loads(capsys.readouterr().out)["models"][0]["upstream"]
    assert planned == "http://[fe80::1%eth0]:8000/v1"
    deployment = resolve(load_stack_text(path.read_text()).stack)
    assert deployment.proxy_config({}, None).upstreams["q"].base_url == planned
    import httpx

    assert httpx.URL(planned).host == "fe80::1%eth0"


def test_loopback_models_on_two_hosts_export_distinct_tunnels() -> None:
    text = yaml.safe_dump({
        "name": "two", "hosts": {"left": {"address": "10.0.0.1", "user": "me", "port": 2222},
                                 "right": {"address": "fe80::2", "user": "nv"}},
        "models": [
            {"name": m, "host": h, "image": "vllm/vllm-openai:v0.28.0", "model": "Qwen/Qwen3-8B",
             "served_name": f"q-{m}", "max_model_len": 65536, "gpu_memory_utilization": 0.4,
             "bind": "loopback", "api_key": "none"}
            for m, h in (("a", "left"), ("b", "right"))]})
    deployment = resolve(load_stack_text(text).stack)
    bases = {e["model_name"]: e["litellm_params"]["api_base"]
             for e in litellm_config(deployment)["model_list"]}
    assert (bases["a"], bases["b"]) == ("http://127.0.0.1:8000/v1", "http://127.0.0.1:8001/v1")
    from spark_stack.export_litellm import litellm_models

    notes = [m.note for m in litellm_models(deployment).values()]
    assert notes == ["tunnel: ssh -N -p 2222 -L 8000:127.0.0.1:8000 me@10.0.0.1",
                     "tunnel: ssh -N -L 8001:127.0.0.1:8000 nv@fe80::2"]


def test_proxy_limits_from_the_stack_file_reach_the_proxy_config() -> None:
    text = AB.replace("  routes: {a: b}\n", "  limits: {upstream_timeout: 1200, max_headers: 50}\n")
    config = resolve(load_stack_text(text).stack).proxy_config({}, None)
    assert (config.upstream_timeout, config.max_headers, config.header_timeout) == (1200, 50, 10)
    assert ProxyConfig.from_json(config.to_json()) == config
    with pytest.raises(StackFileError, match="proxy.limits.upstrem_timeout"):
        load_stack_text(AB.replace("  routes: {a: b}\n", "  limits: {upstrem_timeout: 1}\n"))
