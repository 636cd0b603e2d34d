"""The shipped stack files: all valid; the seed recipe reproduces its source document."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from spark_stack.cli import main
from spark_stack.spec import docker_run_command, render_container
from spark_stack.stack import schema
from spark_stack.stack.argv import PROMPT_TOKENS_DETAILS
from spark_stack.stack.loader import BUILTIN_DIR, load_stack

ROOT = Path(__file__).resolve().parents[2]
STACKS = sorted((ROOT / "stacks").glob("*.yaml"))

# The source document's command, verbatim ("Builder Daily", 2026-04-30; see
# /work/shared/seeds/README.md in the project's research notes).
DOCUMENT_COMMAND = r"""
docker run -d --gpus all --ipc host --shm-size 64gb \
  -p 8888:8000 \
  -v ~/.cache/huggingface:/root/.cache/huggingface \
  vllm/vllm-openai:cu130-nightly \
  RedHatAI/Qwen3.6-35B-A3B-NVFP4 \
  --served-model-name Intel/Qwen3.6-35B-A3B-int4-AutoRound \
  --host 0.0.0.0 --port 8000 \
  --dtype bfloat16 --gpu-memory-utilization 0.9 \
  --max-model-len 131072 \
  --enable-auto-tool-choice \
  --tool-call-parser qwen3_coder \
  --reasoning-parser qwen3 \
  --moe-backend=flashinfer_cutlass
"""
IMAGE = "vllm/vllm-openai:cu130-nightly"


def normalised(tokens: list[str]) -> list[str]:
    """``--x=y`` → ``--x y``, as vLLM's parser reads it."""
    out: list[str] = []
    for token in tokens:
        if token.startswith("--") and "=" in token:
            out += token.split("=", 1)
        else:
            out.append(token)
    return out


def split_document() -> tuple[list[str], list[str]]:
    tokens = shlex.split(DOCUMENT_COMMAND.replace("\\\n", " "))
    at = tokens.index(IMAGE)
    return tokens[2:at], tokens[at + 1 :]


def without_our_labels(tokens: list[str]) -> list[str]:
    out: list[str] = []
    skip = False
    for token in tokens:
        if skip:
            skip = False
        elif token in ("--name", "--label"):
            skip = True
        else:
            out.append(token)
    return out


def test_there_are_the_three_stack_files() -> None:
    assert {p.name for p in STACKS} >= {"seed-recipe.yaml", "qwen36-spark.yaml", "demo.yaml"}


@pytest.mark.parametrize("path", STACKS, ids=[p.stem for p in STACKS])
def test_every_stack_file_validates(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--stack", str(path), "validate"]) == 0
    assert f"ok: {path}" in capsys.readouterr().out


def test_the_packaged_demo_is_the_top_level_demo() -> None:
    assert (BUILTIN_DIR / "demo.yaml").read_bytes() == (ROOT / "stacks" / "demo.yaml").read_bytes()


def test_demo_needs_no_spark(capsys: pytest.CaptureFixture[str]) -> None:
    loaded = load_stack("demo")
    stack = loaded.stack
    assert stack.host is None and not stack.hosts
    assert [m.kind for m in stack.models] == ["simulator"]
    assert stack.proxy.listen == "127.0.0.1:4111"
    assert stack.proxy.routes["*"] == stack.models[0].name
    assert set(stack.claude.models) == {"opus", "sonnet", "haiku"}
    assert loaded.warnings == []


def seed_model() -> tuple[schema.Stack, schema.ContainerModel]:
    stack = load_stack(ROOT / "stacks" / "seed-recipe.yaml").stack
    model = stack.models[0]
    assert isinstance(model, schema.ContainerModel)
    return stack, model


def test_seed_recipe_argv_is_the_documents() -> None:
    stack, model = seed_model()
    _, document_argv = split_document()
    command = list(render_container(stack, model).command)
    # The one flag spark-stack adds to the document's: usage reports prefix-cache hits.
    command.remove(PROMPT_TOKENS_DETAILS)
    assert command == normalised(document_argv)


def test_seed_recipe_docker_flags_are_the_documents() -> None:
    stack, model = seed_model()
    document_flags, _ = split_document()
    ours = shlex.split(docker_run_command(render_container(stack, model)))
    at = ours.index(IMAGE)
    assert without_our_labels(ours[2:at]) == document_flags


def test_seed_recipe_routes_the_documents_three_aliases() -> None:
    stack = load_stack(ROOT / "stacks" / "seed-recipe.yaml").stack
    assert stack.proxy.listen == "127.0.0.1:4000"
    routes = stack.proxy.routes
    big, small = stack.models
    assert routes == {
        "claude-sonnet-4-20250514": big.name,
        "claude-3-5-sonnet-20241022": big.name,
        "claude-3-opus-20240229": small.name,
    }
    assert isinstance(small, schema.RemoteModel)
    assert small.served_name == "Intel/Qwen3.5-27B-int4-AutoRound"
    assert isinstance(big, schema.ContainerModel)
    assert small.url.endswith(":8889/v1") and big.port == 8888  # one vLLM per model


def test_seed_recipe_lint_flags_its_known_problems(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "stacks" / "seed-recipe.yaml"
    assert main(["--stack", str(path), "validate", "--json"]) == 0
    warnings = json.loads(capsys.readouterr().out)["warnings"]
    by_key: dict[str, list[str]] = {}
    for warning in warnings:
        by_key.setdefault(warning["key_path"], []).append(warning["message"])
    image = " ".join(by_key["models[0].image"])
    assert "'cu130-nightly' is stale" in image
    assert "needs vLLM 0.28.0 or newer on the GB10" in image
    assert "0.9 is above 0.6" in by_key["models[0].gpu_memory_utilization"][0]
    assert "no effect with ipc: host" in by_key["models[0].shm_size"][0]
    assert "names a different checkpoint" in by_key["models[0].served_name"][0]
    assert "no API key" in by_key["models[0].api_key"][0]
    assert all(w["fix"] and w["line"] for w in warnings)


def test_plan_prints_the_documents_flags(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "stacks" / "seed-recipe.yaml"
    assert main(["--stack", str(path), "plan"]) == 0
    out = capsys.readouterr().out
    for line in (
        "--gpus all --ipc host --shm-size 64gb -p 8888:8000 "
        "-v ~/.cache/huggingface:/root/.cache/huggingface",
        "--served-model-name Intel/Qwen3.6-35B-A3B-int4-AutoRound",
        "--dtype bfloat16",
        "--gpu-memory-utilization 0.9",
        "--moe-backend flashinfer_cutlass",
    ):
        assert line in out


def test_recommended_stack_is_what_init_writes(tmp_path: Path, fake_home: Path) -> None:
    written = tmp_path / "qwen36-spark.yaml"
    assert main(["init", str(written), "--host", "spark"]) == 0
    assert written.read_text() == (ROOT / "stacks" / "qwen36-spark.yaml").read_text()


def test_recommended_stack_needs_no_hf_token_and_no_user(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It asked for HF_TOKEN (the model is not gated) and hard-coded `user: ubuntu`."""
    from spark_stack.deployment import resolve

    monkeypatch.delenv("HF_TOKEN", raising=False)
    loaded = load_stack(ROOT / "stacks" / "qwen36-spark.yaml")
    assert loaded.stack.host is not None and loaded.stack.host.user is None
    spec = resolve(loaded.stack).models[0].container
    assert spec is not None and not any(var.is_secret for var in spec.env)


def test_recommended_stack_is_clean_and_safe() -> None:
    loaded = load_stack(ROOT / "stacks" / "qwen36-spark.yaml")
    assert loaded.warnings == []
    model = loaded.stack.models[0]
    assert isinstance(model, schema.ContainerModel)
    assert model.image == "vllm/vllm-openai:v0.28.0"
    assert model.gpu_memory_utilization is not None and model.gpu_memory_utilization <= 0.5
    assert model.speculative is not None and model.speculative.method == "mtp"
    assert None not in model.cache.model_dump().values()
    assert model.api_key == "auto"
