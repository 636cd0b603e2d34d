"""vLLM flag sets: image → version, normalisation, checking, de-duplication."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spark_stack.vllm.flags import (
    KNOWN_VERSIONS,
    NEWEST,
    abbreviations,
    canonical_flag,
    check_argv,
    dedupe,
    load_flag_set,
    version_for_image,
)

V28 = load_flag_set("0.28.0")


@pytest.mark.parametrize(
    ("image", "version", "noted"),
    [
        ("vllm/vllm-openai:v0.28.0", "0.28.0", False),
        ("docker.io/vllm/vllm-openai:v0.24.0", "0.24.0", False),
        ("vllm/vllm-openai:v0.33.0", "0.33.0", False),
        ("vllm/vllm-openai:v0.30.1", "0.28.0", True),  # closest known, not newer
        ("vllm/vllm-openai:v0.40.0", "0.33.0", True),
        ("vllm/vllm-openai:v0.19.1", "0.24.0", True),
        ("vllm/vllm-openai:nightly", NEWEST, True),
        ("vllm/vllm-openai:latest", NEWEST, True),
        ("vllm/vllm-openai", NEWEST, True),
        ("vllm/vllm-openai:cu130-nightly", "0.24.0", True),  # runs 0.19: the oldest known
        ("nvcr.io/nvidia/vllm:25.09-py3", NEWEST, True),
        ("localhost:5000/vllm/vllm-openai:v0.28.0", NEWEST, True),
        ("vllm/vllm-openai@sha256:" + "0" * 64, NEWEST, True),
    ],
)
def test_image_maps_to_a_flag_set(image: str, version: str, noted: bool) -> None:
    choice = version_for_image(image)
    assert choice.version == version
    assert (choice.note is not None) == noted
    if noted:
        assert version in (choice.note or "")


def test_every_packaged_set_loads_with_its_version() -> None:
    for version in KNOWN_VERSIONS:
        flags = load_flag_set(version)
        assert flags.version == version
        assert "--moe-backend" in flags.flags and "--served-model-name" in flags.flags
        assert "flashinfer_cutlass" in flags.choices["moe_backend"]


@pytest.mark.parametrize(
    ("written", "canonical"),
    [
        ("--max_model_len", "--max-model-len"),
        ("--moe-backend=marlin", "--moe-backend"),
        ("--speculative-config.method", "--speculative-config"),
        ("--enable-prefix-cach", "--enable-prefix-caching"),  # unambiguous prefix
        ("-O3", "--optimization-level"),
        ("-tp", "-tp"),
    ],
)
def test_canonical_flag_normalises_like_vllm(written: str, canonical: str) -> None:
    assert canonical_flag(V28, written) == canonical


def test_document_flags_are_valid_in_every_known_version() -> None:
    argv = [
        "RedHatAI/Qwen3.6-35B-A3B-NVFP4", "--served-model-name", "x", "--host", "0.0.0.0",
        "--port", "8000", "--dtype", "bfloat16", "--gpu-memory-utilization", "0.9",
        "--max-model-len", "131072", "--enable-auto-tool-choice", "--tool-call-parser",
        "qwen3_coder", "--reasoning-parser", "qwen3", "--moe-backend=flashinfer_cutlass",
    ]
    for version in KNOWN_VERSIONS:
        assert check_argv(argv, load_flag_set(version)) == []


@pytest.mark.parametrize(
    ("args", "message", "fix"),
    [
        (["--max-num-seq", "4", "--max-num-seqs", "4"], None, None),
        (["--enable-prefix-cache"], "unknown vLLM flag", "--enable-prefix-caching"),
        (["--moe-backend", "FlashInfer-Cutlass"], None, None),  # vLLM lower()s and maps - to _
        (["--moe-backend", "cutlas"], "not a valid moe_backend", "'cutlass'"),
        (["--attention-backend", "flash_attn"], None, None),  # case-insensitive enum name
        (["--attention-backend", "auto"], None, None),
        (["--kv-cache-dtype", "FP8"], "not a valid kv_cache_dtype", "'fp8'"),  # exact choices
        (["--load-format", "FastSafeTensors"], None, None),
        (["--reasoning-parser", "none"], None, None),
        (["--tool-call-parser", "my_parser", "--tool-parser-plugin", "/p.py"], None, None),
        (["--tool-call-parser", "hermess"], "not a valid tool_call_parser", "'hermes'"),
        (["--speculative-config", "{method: mtp}"], "needs JSON", "JSON object"),
        (["--speculative-config", '{"method": "eagle9"}'], "speculative_method", "eagle"),
        (["--speculative-config.method", "mtp"], None, None),
        (["--enable-prefix-caching", "yes"], "takes no value", "--no-enable-prefix-caching"),
        (["--max-num-seqs"], "needs a value", "next item"),
        (["--max-num-seqs", "4", "8"], "unexpected argument '8'", "takes one value"),
        (["--served-model-name", "a", "b"], None, None),  # nargs='+'
        (["--seed", "-1"], None, None),  # a negative number is a value
        (["--hf-token"], None, None),  # optional value
        (["-O3"], None, None),
        (["--max-num-seqs 8"], "in one item", "two items"),
    ],
)
def test_check_argv(args: list[str], message: str | None, fix: str | None) -> None:
    issues = check_argv(["Qwen/Qwen3-8B", *args], V28)
    if message is None:
        assert issues == []
    else:
        assert len(issues) == 1, issues
        assert message in issues[0].message and fix is not None and fix in issues[0].fix


def test_flags_gone_in_a_newer_version_point_to_the_old_one() -> None:
    issues = check_argv(["m", "--calculate-kv-scales"], load_flag_set("0.33.0"))
    assert len(issues) == 1
    assert "not in vLLM 0.33.0" in issues[0].message
    assert "0.24.0" in issues[0].fix
    assert check_argv(["m", "--calculate-kv-scales"], load_flag_set("0.24.0")) == []


def test_dedupe_keeps_the_last_occurrence_of_each_option() -> None:
    argv = [
        "m", "--max-num-seqs", "4", "--enable-prefix-caching", "--max_num_seqs=8",
        "--no-enable-prefix-caching", "-tp", "1", "--tensor-parallel-size", "2",
    ]
    assert dedupe(argv, V28) == [
        "m", "--max_num_seqs=8", "--no-enable-prefix-caching", "--tensor-parallel-size", "2",
    ]


def test_abbreviations_are_reported_with_their_expansion() -> None:
    assert abbreviations(["m", "--trust-remote", "--max-num-seqs", "4"], V28) == [
        (1, "--trust-remote-code")
    ]


_value_flags = sorted(
    f for f in V28.flags
    if f.startswith("--") and V28.takes_value(f) and not V28.takes_many(f)
    and not V28.is_json_option(f) and not V28.value_optional(f)
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(_value_flags), st.integers(0, 9)), max_size=8),
    st.booleans(),
)
def test_dedupe_is_idempotent_and_keeps_each_options_last_value(
    pairs: list[tuple[str, int]], underscores: bool
) -> None:
    argv = ["m"]
    for flag, value in pairs:
        written = "--" + flag[2:].replace("-", "_") if underscores else flag
        argv += [written, str(value)]
    once = dedupe(argv, V28)
    assert dedupe(once, V28) == once
    expected: dict[str, str] = {}
    for flag, value in pairs:
        expected[V28.primary(flag)] = str(value)
    kept = {V28.primary(canonical_flag(V28, once[i])): once[i + 1] for i in range(1, len(once), 2)}
    assert kept == expected


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(sorted(f for f in V28.flags if f.startswith("--"))))
def test_every_known_flag_written_with_underscores_is_still_known(flag: str) -> None:
    written = "--" + flag[2:].replace("-", "_")
    assert canonical_flag(V28, written) == flag


def test_a_stale_tag_note_agrees_with_the_version_it_runs() -> None:
    note = version_for_image("vllm/vllm-openai:cu130-nightly").note or ""
    assert note.startswith("tag 'cu130-nightly' runs vLLM 0.19 (a stale tag)")
    assert "checked against vLLM 0.24.0 (the oldest packaged" in note
    assert "names no vLLM release" not in note
