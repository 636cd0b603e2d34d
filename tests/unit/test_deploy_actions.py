"""Desired vs observed → create/replace/keep/remove, and the host diff `plan` shows."""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from spark_stack.deploy.actions import (
    LABEL_SECRETS_HASH,
    LABEL_SPEC,
    Observed,
    changed_fields,
    is_noop,
    observed_from_inspect,
    plan_actions,
    secrets_hash,
)
from spark_stack.spec import ContainerSpec, render_container
from spark_stack.stack.loader import load_stack_text

STACK = """
name: demo1
host: {address: gb10}
models:
  - name: a
    image: vllm/vllm-openai:v0.28.0
    model: Qwen/Qwen3-0.6B
    port: 8001
    gpus: none
  - name: b
    image: vllm/vllm-openai:v0.28.0
    model: Qwen/Qwen3-0.6B
    port: 8002
    gpus: none
"""


def _specs(text: str = STACK) -> list[ContainerSpec]:
    stack = load_stack_text(text, lint=False).stack
    return [render_container(stack, m) for m in stack.container_models()]


def _running(spec: ContainerSpec, *, secrets: str = "s", state: str = "running",
             image_id: str = "sha256:1") -> Observed:
    return Observed(id=f"id-{spec.model}", name=spec.name, model=spec.model,
                    spec_hash=spec.spec_hash, secrets_hash=secrets, state=state,
                    image=spec.image, image_id=image_id, spec_json=spec.canonical())


def test_nothing_on_the_host_creates_every_model_in_stack_order() -> None:
    specs = _specs()
    actions = plan_actions(specs, [], {"a": "s", "b": "s"})
    assert [(a.kind, a.model, a.reason) for a in actions] == [
        ("create", "a", "not on the host"), ("create", "b", "not on the host")]
    assert not is_noop(actions)


def test_matching_running_containers_are_kept() -> None:
    specs = _specs()
    actions = plan_actions(specs, [_running(s) for s in specs], {"a": "s", "b": "s"})
    assert [(a.kind, a.reason) for a in actions] == [("keep", "up to date")] * 2
    assert is_noop(actions)


def test_a_changed_field_replaces_and_is_named() -> None:
    old = _specs()
    new = _specs(STACK.replace("port: 8002", "port: 8003\n    max_model_len: 40960"))
    actions = plan_actions(new, [_running(s) for s in old], {"a": "s", "b": "s"})
    assert actions[0].kind == "keep"
    assert actions[1].kind == "replace"
    # The setting behind the argv is named, not "command".
    assert actions[1].changed == ("max_model_len", "host_port")
    assert actions[1].reason == "changed: max_model_len, host_port"


def test_argv_changes_name_fields_and_extra_flags() -> None:
    from spark_stack.stack.argv import argv_changes

    old = ["Qwen/A", "--max-model-len", "65536", "--max-num-seqs", "8", "--enforce-eager"]
    new = ["Qwen/B", "--max-model-len", "98304", "--max-num-seqs", "8", "--tool-call-parser", "x"]
    assert argv_changes(old, new) == ["max_model_len", "model", "tool_call_parser",
                                      "--enforce-eager"]
    assert argv_changes(old, old) == []


def test_a_rotated_secret_replaces_without_naming_it() -> None:
    specs = _specs()
    actions = plan_actions(specs, [_running(s) for s in specs], {"a": "s", "b": "other"})
    assert (actions[1].kind, actions[1].reason) == ("replace", "changed: a secret value")


def test_a_stopped_or_created_container_is_replaced() -> None:
    specs = _specs()
    observed = [_running(specs[0], state="exited"), _running(specs[1], state="created")]
    actions = plan_actions(specs, observed, {"a": "s", "b": "s"})
    assert [(a.kind, a.reason) for a in actions] == [
        ("replace", "container is exited"), ("replace", "container is created")]


def test_a_moved_image_tag_replaces() -> None:
    specs = _specs()
    actions = plan_actions(specs, [_running(s) for s in specs], {"a": "s", "b": "s"},
                           {"vllm/vllm-openai:v0.28.0": "sha256:2"})
    assert {a.kind for a in actions} == {"replace"}
    assert actions[0].changed == ("image digest",)


def test_a_model_gone_from_the_stack_is_removed_and_duplicates_replaced() -> None:
    a, b = _specs()
    stray = replace(_running(b), id="id-b2")
    actions = plan_actions([a], [_running(a), _running(a), _running(b), stray], {"a": "s"})
    assert [(x.kind, x.model) for x in actions] == [
        ("replace", "a"), ("remove", "b"), ("remove", "b")]
    assert actions[0].reason == "2 containers found"


def test_secrets_hash_depends_on_values_and_container_but_never_contains_them() -> None:
    a, b = _specs()
    one = secrets_hash(a, {"HF_TOKEN": "hf_secret_value"})
    assert one == secrets_hash(a, {"HF_TOKEN": "hf_secret_value"})
    assert one != secrets_hash(a, {"HF_TOKEN": "hf_other"})
    assert one != secrets_hash(b, {"HF_TOKEN": "hf_secret_value"})
    assert "hf_secret_value" not in one and len(one) == 16


def test_observed_from_inspect_reads_labels_and_state() -> None:
    spec = _specs()[0]
    attrs = {
        "Id": "abc", "Name": "/spark-stack-demo1-a", "Image": "sha256:9", "RestartCount": 3,
        "Config": {"Image": spec.image, "Labels": {
            **spec.labels(), LABEL_SECRETS_HASH: "s", LABEL_SPEC: spec.canonical()}},
        "State": {"Status": "restarting", "OOMKilled": True, "ExitCode": 137,
                  "StartedAt": "2026-01-01T00:00:00.1234567Z"},
    }
    found = observed_from_inspect(attrs)
    assert (found.name, found.model, found.spec_hash, found.state) == (
        "spark-stack-demo1-a", "a", spec.spec_hash, "restarting")
    assert (found.restart_count, found.oom_killed, found.exit_code) == (3, True, 137)
    assert changed_fields(found.spec_json, spec) == ()


def test_changed_fields_survives_a_missing_or_garbled_label() -> None:
    spec = _specs()[0]
    assert changed_fields("", spec) == ()
    assert changed_fields("{not json", spec) == ()
    assert changed_fields(json.dumps([1]), spec) == ()


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=6),
       st.sets(st.sampled_from(["a", "b"])))
def test_every_observed_container_gets_exactly_one_action(
    observed_models: list[str], desired_models: set[str]
) -> None:
    specs = {s.model: s for s in _specs()}
    desired = [specs[m] for m in sorted(desired_models)]
    other = _specs()[0]
    observed = [replace(_running(specs.get(m, other)), model=m, id=f"{m}{i}")
                for i, m in enumerate(observed_models)]
    actions = plan_actions(desired, observed, {m: "s" for m in desired_models})
    assert [a.model for a in actions if a.kind != "remove"] == sorted(desired_models)
    removed = sorted(a.observed.id for a in actions if a.kind == "remove" and a.observed)
    assert removed == sorted(o.id for o in observed if o.model not in desired_models)


def test_observed_from_the_container_listing_is_enough_to_plan() -> None:
    from spark_stack.deploy.actions import observed_from_summary

    spec = _specs()[0]
    item = {"Id": "abc", "Names": ["/spark-stack-demo1-a"], "Image": spec.image,
            "ImageID": "sha256:9", "State": "running", "Status": "Up 3 minutes",
            "Labels": {**spec.labels(), LABEL_SECRETS_HASH: "s", LABEL_SPEC: spec.canonical()}}
    found = observed_from_summary(item)
    assert (found.name, found.model, found.state, found.image_id) == (
        "spark-stack-demo1-a", "a", "running", "sha256:9")
    assert [a.kind for a in plan_actions([spec], [found], {"a": "s"})] == ["keep"]


def test_an_interrupted_replace_keeps_the_new_container_and_sets_the_previous_aside() -> None:
    """The new container (desired spec, its own name) beside `<name>-previous`: keep it, with
    the previous one riding along to be removed once it serves; not "2 containers found"."""
    spec = _specs()[0]
    new = _running(spec)
    previous = replace(_running(spec, state="exited"), id="id-old", name=f"{spec.name}-previous",
                       spec_hash="old")
    [action] = plan_actions([spec], [previous, new], {"a": "s"})
    assert (action.kind, action.observed, action.aside) == ("keep", new, previous)
    assert "interrupted replace" in action.reason
    assert not is_noop([action])  # something is still to be done: under the lock
    # The new one drifted too: replaced as usual (the previous one goes with it).
    [action] = plan_actions([spec], [previous, replace(new, spec_hash="x")], {"a": "s"})
    assert (action.kind, action.observed, action.aside) == ("replace", replace(new,
                                                            spec_hash="x"), previous)
    # Two containers of any other names are duplicates: replaced by one.
    other = replace(previous, name="someone-else")
    [action] = plan_actions([spec], [other, new], {"a": "s"})
    assert (action.kind, action.reason) == ("replace", "2 containers found")
