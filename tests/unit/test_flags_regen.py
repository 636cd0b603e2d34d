"""scripts/regen_vllm_flags.py: the AST extraction on a miniature of vLLM's source."""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]

SOURCES = {
    "vllm/config/kernel.py": '''
from typing import Literal
MoEBackend = Literal["auto", "marlin", "flashinfer_cutlass"]
ExtraBackend = Literal[MoEBackend, "triton"]
class KernelConfig:
    moe_backend: MoEBackend = "auto"
    enable_x: bool = False
    limit: int = 3
''',
    "vllm/config/speculative.py": '''
from typing import Literal
MTPTypes = Literal["qwen3_next_mtp"]
SpeculativeMethod = Literal["ngram", "mtp", MTPTypes]
class SpeculativeConfig:
    method: SpeculativeMethod | None = None
class VllmConfig:
    speculative_config: SpeculativeConfig | None = None
''',
    "vllm/engine/arg_utils.py": '''
import argparse
class EngineArgs:
    @staticmethod
    def add_cli_args(parser):
        kernel_kwargs = get_kwargs(KernelConfig)
        group = parser.add_argument_group("Kernel")
        group.add_argument("--moe-backend", **kernel_kwargs["moe_backend"])
        group.add_argument("--enable-x", "-ex", **kernel_kwargs["enable_x"])
        limit_kwargs = kernel_kwargs["limit"]
        group.add_argument("--limit", **limit_kwargs)
        vllm_kwargs = get_kwargs(VllmConfig)
        parser.add_argument("--speculative-config", "-sc", **vllm_kwargs["speculative_config"])
        parser.add_argument("--disable-log-stats", action="store_true")
        parser.add_argument("--enable-lora", action=argparse.BooleanOptionalAction)
        return parser
''',
    "vllm/entrypoints/openai/cli_args.py": '''
class BaseFrontendArgs:
    tool_call_parser: str | None = None
    enable_auto_tool_choice: bool = False
class FrontendArgs(BaseFrontendArgs):
    port: int = 8000
def make_arg_parser(parser):
    parser.add_argument("model_tag", nargs="?")
    parser.add_argument("--headless", action="store_true")
    return parser
''',
    "vllm/tool_parsers/__init__.py": '''
_TOOL_PARSERS_TO_REGISTER = {"hermes": ("a", "b"), "qwen3_coder": ("c", "d")}
''',
    "vllm/v1/attention/backends/registry.py": '''
class AttentionBackendEnum(Enum):
    FLASH_ATTN = "x"
    FLASHINFER = "y"
''',
}


def regen() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "regen_vllm_flags", ROOT / "scripts" / "regen_vllm_flags.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_extracts_flags_switches_and_choices() -> None:
    data = regen().extract(SOURCES, "9.9.9", "vllm-9.9.9.whl")
    assert data["version"] == "9.9.9"
    assert data["flags"] == sorted([
        "--moe-backend", "--enable-x", "-ex", "--no-enable-x", "--limit",
        "--speculative-config", "-sc", "--disable-log-stats", "--enable-lora",
        "--no-enable-lora", "--headless", "--tool-call-parser", "--enable-auto-tool-choice",
        "--no-enable-auto-tool-choice", "--port",
    ])
    assert "--enable-x" in data["bool_flags"] and "--no-enable-x" in data["bool_flags"]
    assert "--headless" not in data["bool_flags"]  # store_true: told apart by its kind
    details = data["flag_details"]
    assert details["--moe-backend"]["kind"] == "choices"
    assert details["--limit"] == {
        "source": "KernelConfig.limit", "annotation": "int", "kind": "other",
        "primary": "--limit",
    }
    assert details["-sc"]["kind"] == "json-dataclass"
    assert details["-sc"]["primary"] == "--speculative-config"
    assert details["--no-enable-x"]["negated_of"] == "--enable-x"
    assert details["--headless"]["kind"] == "action:'store_true'"
    assert data["choices"] == {
        "moe_backend": ["auto", "flashinfer_cutlass", "marlin"],
        "attention_backend": ["auto", "FLASHINFER", "FLASH_ATTN"],
        "tool_call_parser": ["hermes", "qwen3_coder"],
        "speculative_method": ["mtp", "ngram", "qwen3_next_mtp"],
    }


def test_main_reads_a_wheel_and_writes_the_set(tmp_path: Path) -> None:
    wheel = tmp_path / "vllm-9.9.9-cp38-abi3-manylinux_2_28_aarch64.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for name, text in SOURCES.items():
            archive.writestr(name, text)
        archive.writestr("vllm/_C.abi3.so", b"\x7fELF")  # never read
    assert regen().main(["9.9.9", "--wheel", str(wheel), "--out", str(tmp_path)]) == 0
    written = json.loads((tmp_path / "vllm-flags-9.9.9.json").read_text())
    assert written["source"] == f"{wheel.name} (static AST extraction)"
    assert "--moe-backend" in written["flags"]
