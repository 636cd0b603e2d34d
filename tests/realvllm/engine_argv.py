"""vLLM 0.32's real `vllm serve` argument parser, asked from the tests (no server is started).

The engine's Python runs :mod:`tests.realvllm.parse_argv` once per batch of command lines.
"""

from __future__ import annotations

import json
import os
import subprocess
from functools import cache
from pathlib import Path

from tests.testhost.vllm_cpu import ensure_engine

_SCRIPT = Path(__file__).resolve().parent / "parse_argv.py"


def parse_argvs(argvs: list[list[str]]) -> tuple[list[str], list[dict[str, object]]]:
    """(every option the real parser knows, one result per argv: ok or argparse's error)."""
    done = subprocess.run(
        [str(ensure_engine(say=False)), str(_SCRIPT)], input=json.dumps({"argvs": argvs}),
        capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_NO_USAGE_STATS": "1"})
    if done.returncode != 0:
        raise RuntimeError(f"vLLM's parser did not run:\n{done.stderr[-3000:]}")
    answer = json.loads(done.stdout)
    return answer["flags"], answer["results"]


@cache
def real_flags() -> tuple[str, ...]:
    return tuple(parse_argvs([])[0])
