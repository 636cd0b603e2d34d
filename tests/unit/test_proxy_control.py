"""How `up` steers the running proxy through its control files: a drained replica gets no new
request, a config whose only change is the upstreams' settings is taken over in place."""

from __future__ import annotations

import threading
import time
from dataclasses import replace
from pathlib import Path

import orjson

from spark_stack.deploy import rolling
from spark_stack.deploy.report import QuietReporter
from spark_stack.proxy import control
from spark_stack.proxy.config import ProxyConfig, Route, Upstream
from spark_stack.proxy.dispatch import Dispatcher
from spark_stack.proxy.server import ProxyApp


def config(tmp_path: Path, **upstream: object) -> ProxyConfig:
    upstreams = {n: Upstream(n, f"http://127.0.0.1:9/{n}/v1", "q", max_model_len=65536,
                             **upstream)  # type: ignore[arg-type]
                 for n in ("q", "q@a", "q@b")}
    return ProxyConfig(upstreams=upstreams, routes=[Route("q", "q", "model name")],
                       replicas={"q": ["q@a", "q@b"]}, control_dir=str(tmp_path))


def sessions(dispatcher: Dispatcher, n: int = 200) -> set[str]:
    return {dispatcher.replica("q", lambda i=i: f"s{i}".encode()) for i in range(n)}


def test_a_drained_replica_gets_no_new_session_while_another_is_up() -> None:
    dispatcher = Dispatcher({"q@a": 4, "q@b": 4}, {"q": ["q@a", "q@b"]})
    assert sessions(dispatcher) == {"q@a", "q@b"}
    dispatcher.drained = frozenset({"q@a"})
    assert sessions(dispatcher) == {"q@b"}
    dispatcher.down.add("q@b")  # the other one died meanwhile: the drained one still serves
    assert sessions(dispatcher) == {"q@a"}


def test_the_proxy_drains_what_drain_json_names_and_says_what_still_runs(
    tmp_path: Path,
) -> None:
    app = ProxyApp(config(tmp_path))
    app.apply_control()
    state = control.read_state(tmp_path)
    assert state is not None and state.drained == frozenset() and state.busy == {}
    assert state.config == control.config_digest(app.config)
    app.dispatcher.pools["q@a"].in_flight = 2
    control.write_drain(tmp_path, ["q@a", "unknown"])
    app.apply_control()
    assert app.dispatcher.drained == frozenset({"q@a"})
    state = control.read_state(tmp_path)
    assert state is not None and state.drained == {"q@a"} and state.busy == {"q@a": 2}
    assert (tmp_path / control.STATE_FILE).stat().st_mode & 0o777 == 0o600
    control.write_drain(tmp_path, [])
    app.apply_control()
    assert app.dispatcher.drained == frozenset()


def test_new_upstream_settings_are_taken_over_in_place(tmp_path: Path) -> None:
    app = ProxyApp(config(tmp_path))
    new = config(tmp_path, max_num_seqs=7)
    new = replace(new, upstreams={n: replace(u, max_model_len=32768)
                                  for n, u in new.upstreams.items()})
    assert control.reloadable(app.config, new)
    (tmp_path / control.CONFIG_FILE).write_text(new.to_json())
    app.apply_control()
    assert app.config == new
    assert app.router.resolve("q").max_model_len == 32768
    assert app.dispatcher.pools["q@b"].capacity == 7
    state = control.read_state(tmp_path)
    assert state is not None and state.config == control.config_digest(new)


def test_a_config_that_adds_an_upstream_or_changes_more_is_left_to_a_restart(
    tmp_path: Path,
) -> None:
    running = config(tmp_path)
    more = replace(running, upstreams={**running.upstreams,
                                       "r": Upstream("r", "http://127.0.0.1:9/v1", "r")})
    assert not control.reloadable(running, more)
    assert not control.reloadable(running, replace(running, port=9999))
    app = ProxyApp(running)
    (tmp_path / control.CONFIG_FILE).write_text(more.to_json())
    app.apply_control()
    assert app.config == running


def test_up_waits_until_the_drained_replica_is_idle(tmp_path: Path) -> None:
    def proxy() -> None:  # the proxy's side: acknowledges, then its last request ends
        for busy in (3, 1, 0):
            time.sleep(0.05)
            state = control.ProxyState(frozenset({"q@a"}), {"q@a": busy}, "x")
            (tmp_path / control.STATE_FILE).write_bytes(state.to_json())

    thread = threading.Thread(target=proxy)
    started = time.monotonic()
    thread.start()
    rolling._wait_idle(tmp_path, "q@a", QuietReporter(), 10.0, time.monotonic)
    thread.join()
    assert 0.14 < time.monotonic() - started < 2.0
    assert orjson.loads((tmp_path / control.STATE_FILE).read_bytes())["busy"] == {"q@a": 0}


def test_the_wait_for_a_drained_replica_is_bounded(tmp_path: Path) -> None:
    state = control.ProxyState(frozenset({"q@a"}), {"q@a": 5}, "x")
    (tmp_path / control.STATE_FILE).write_bytes(state.to_json())
    started = time.monotonic()
    rolling._wait_idle(tmp_path, "q@a", QuietReporter(), 0.3, time.monotonic)
    assert 0.3 <= time.monotonic() - started < 1.5
