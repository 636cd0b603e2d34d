"""The simulator's `vllm serve` command line: parsing, flag checking, config."""

from __future__ import annotations

from pathlib import Path

import pytest

from spark_stack.simulator.config import build_config, parse_human_int
from spark_stack.simulator.flags import (
    UsageError,
    find_flags_file,
    load_spec,
    parse_serve_args,
    spec_from_json,
)

FLAGS_FILE = Path(__file__).resolve().parents[2] / "spark_stack/vllm/data/vllm-flags-0.28.0.json"

NVIDIA_ARGV = [
    "nvidia/Qwen3.6-35B-A3B-NVFP4",
    "--host", "0.0.0.0", "--port", "8000", "--tensor-parallel-size", "1",
    "--trust-remote-code", "--kv-cache-dtype", "fp8", "--attention-backend", "flashinfer",
    "--moe-backend", "marlin", "--gpu-memory-utilization", "0.4", "--max-model-len", "262144",
    "--max-num-seqs", "4", "--max-num-batched-tokens", "8192", "--enable-chunked-prefill",
    "--async-scheduling", "--enable-prefix-caching",
    "--speculative-config", '{"method":"mtp","num_speculative_tokens":3,"moe_backend":"triton"}',
    "--load-format", "fastsafetensors", "--reasoning-parser", "qwen3",
    "--tool-call-parser", "qwen3_xml", "--enable-auto-tool-choice",
]  # fmt: skip


def test_nvidia_command_parses_against_the_028_flag_set() -> None:
    args = parse_serve_args(NVIDIA_ARGV, load_spec(FLAGS_FILE))
    assert args.model == "nvidia/Qwen3.6-35B-A3B-NVFP4"
    assert args.value("--port") == "8000"
    assert args.value("--enable-auto-tool-choice") == "true"
    assert (
        args.value("--speculative-config")
        == NVIDIA_ARGV[NVIDIA_ARGV.index("--speculative-config") + 1]
    )
    assert args.value("--tool-call-parser") == "qwen3_xml"


def test_unknown_flag_is_refused_with_argparse_wording() -> None:
    with pytest.raises(UsageError) as info:
        parse_serve_args(["m", "--bogus-flag", "--port", "1"], load_spec(FLAGS_FILE))
    assert info.value.render() == (
        "usage: vllm serve [model_tag] [options]\n"
        "vllm serve: error: unrecognized arguments: --bogus-flag\n"
    )


def test_unknown_flag_values_are_listed_like_argparse() -> None:
    with pytest.raises(UsageError) as info:
        parse_serve_args(["m", "--foo-bar", "3", "--x=y"], load_spec(FLAGS_FILE))
    assert info.value.message == "unrecognized arguments: --foo-bar 3 --x=y"


def test_without_a_flag_file_any_flag_is_accepted() -> None:
    args = parse_serve_args(["m", "--bogus-flag", "7", "--another"])
    assert args.value("--bogus-flag") == "7"
    assert args.has("--another")


def test_equals_and_space_forms_and_underscores() -> None:
    args = parse_serve_args(["m", "--max_model_len=4096", "--port", "9"], load_spec(FLAGS_FILE))
    assert args.value("--max-model-len") == "4096"
    assert args.value("--port") == "9"


def test_booleans_take_no_value_and_no_forms_negate() -> None:
    spec = load_spec(FLAGS_FILE)
    args = parse_serve_args(["--enable-prefix-caching", "m", "--no-enable-chunked-prefill"], spec)
    assert args.model == "m"
    assert args.value("--enable-prefix-caching") == "true"
    assert args.value("--enable-chunked-prefill") == "false"
    with pytest.raises(UsageError, match="ignored explicit argument 'yes'"):
        parse_serve_args(["m", "--enable-prefix-caching=yes"], spec)


def test_builtin_booleans_without_file() -> None:
    args = parse_serve_args(["--trust-remote-code", "Qwen/X", "--enable-auto-tool-choice"])
    assert args.model == "Qwen/X"
    assert args.value("--enable-auto-tool-choice") == "true"


def test_list_flags_take_several_values_and_aliases_map() -> None:
    spec = load_spec(FLAGS_FILE)
    args = parse_serve_args(["m", "--served-model-name", "a", "b", "-tp", "2"], spec)
    assert args.values("--served-model-name") == ("a", "b")
    assert args.value("--tensor-parallel-size") == "2"


def test_negative_numbers_are_values_and_missing_values_are_errors() -> None:
    args = parse_serve_args(["m", "--seed", "-1"])
    assert args.value("--seed") == "-1"
    with pytest.raises(UsageError, match="argument --port: expected one argument"):
        parse_serve_args(["m", "--port"])


def test_second_positional_is_unrecognized() -> None:
    with pytest.raises(UsageError, match="unrecognized arguments: extra"):
        parse_serve_args(["m", "extra"])


def test_sim_flags_file_is_found_before_parsing() -> None:
    assert find_flags_file(["m", "--sim-flags-file", "/x.json"]) == "/x.json"
    assert find_flags_file(["m", "--sim-flags-file=/y.json"]) == "/y.json"
    assert find_flags_file(["m"]) is None


def test_spec_from_json_uses_bool_flags_and_list_annotations() -> None:
    spec = spec_from_json(
        {
            "flags": ["--a", "--b", "--c"],
            "bool_flags": ["--a"],
            "flag_details": {"--c": {"annotation": "list[str]", "primary": "--c"}},
        }
    )
    args = parse_serve_args(["m", "--a", "--b", "1", "--c", "x", "y"], spec)
    assert args.options == {"--a": ("true",), "--b": ("1",), "--c": ("x", "y")}


def test_config_from_args_and_env() -> None:
    args = parse_serve_args(
        [
            "Qwen/Q",
            "--served-model-name", "q1", "q2",
            "--max-model-len", "32k",
            "--reasoning-parser", "qwen3",
            "--default-chat-template-kwargs", '{"enable_thinking": false}',
        ]
    )  # fmt: skip
    config = build_config(
        args,
        {"VLLM_API_KEY": "sekrit", "VLLM_SIM_QUIRKS": "resend_id", "VLLM_SIM_STARTUP_SECONDS": "0"},
    )
    assert config.served_model_names == ("q1", "q2")
    assert config.max_model_len == 32000
    assert config.api_keys == ("sekrit",)
    assert config.reasoning_parser == "qwen3"
    assert config.tool_call_parser is None
    assert not config.thinking_default
    assert config.quirks == {"resend_id"}
    assert config.startup_seconds == 0
    assert "sekrit" not in repr(config.non_default_args)


def test_config_rejects_bad_values() -> None:
    with pytest.raises(UsageError, match="invalid int value"):
        build_config(parse_serve_args(["m", "--port", "x"]), {})
    with pytest.raises(UsageError, match="VLLM_SIM_FAIL"):
        build_config(parse_serve_args(["m"]), {"VLLM_SIM_FAIL": "nope"})
    with pytest.raises(UsageError, match="quirk"):
        build_config(parse_serve_args(["m", "--sim-quirks", "odd"]), {})


@pytest.mark.parametrize(
    ("raw", "value"), [("4096", 4096), ("32k", 32000), ("32K", 32768), ("1M", 1048576)]
)
def test_human_readable_max_model_len(raw: str, value: int) -> None:
    assert parse_human_int("--max-model-len", raw) == value


def test_unambiguous_prefixes_expand_like_argparse() -> None:
    spec = load_spec(FLAGS_FILE)
    args = parse_serve_args(["m", "--max-model-l", "4096", "--enable-auto-tool"], spec)
    assert args.value("--max-model-len") == "4096"
    assert args.value("--enable-auto-tool-choice") == "true"
    with pytest.raises(UsageError, match="ambiguous option: --max-num could match --max-num-"):
        parse_serve_args(["m", "--max-num", "4"], spec)
