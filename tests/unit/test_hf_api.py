"""The Hub size lookup behind the download total: sums the weight files, and stays silent (no
request at all) offline."""

from __future__ import annotations

import httpx

from spark_stack.hf_api import repo_size


def test_the_weights_are_summed_and_other_files_left_out() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return httpx.Response(200, json=[
            {"type": "file", "path": "model-00001-of-00002.safetensors", "size": 5_000_000_000},
            {"type": "file", "path": "model-00002-of-00002.safetensors", "size": 1_500_000_000},
            {"type": "file", "path": "config.json", "size": 2_000},
        ])

    with httpx.Client(transport=httpx.MockTransport(handler)) as client:
        assert repo_size("RedHatAI/Qwen3.6-35B-A3B-NVFP4", environ={}, client=client) \
            == 6_500_000_000
    assert seen == ["https://huggingface.co/api/models/RedHatAI/Qwen3.6-35B-A3B-NVFP4/tree/main"
                    "?recursive=1"]


def test_offline_gated_or_odd_names_give_none_without_asking() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request may be sent")

    with httpx.Client(transport=httpx.MockTransport(refuse)) as client:
        assert repo_size("org/name", environ={"HF_HUB_OFFLINE": "1"}, client=client) is None
        assert repo_size("/abs/path", environ={}, client=client) is None

    def gated(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"error": "gated"})

    with httpx.Client(transport=httpx.MockTransport(gated)) as client:
        assert repo_size("meta-llama/x", environ={}, client=client) is None
