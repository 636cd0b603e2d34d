#!/usr/bin/env python3
"""Regenerate the generated files in examples/ from the stack files they come from.

    python examples/regenerate.py          # rewrite them
    python examples/regenerate.py --check  # exit 1 when one is stale (the unit tests run this)

- ``litellm_config.yaml``: ``spark-stack export litellm`` of ``stacks/seed-recipe.yaml``.
- ``claude-demo``: the Claude Code launcher ``spark-stack up`` writes for the demo stack.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def generated() -> dict[Path, str]:
    """Each generated file's path and its current content."""
    from spark_stack.deployment import resolve
    from spark_stack.export_litellm import render_litellm_config
    from spark_stack.launcher import render_launcher, token_file
    from spark_stack.stack.loader import load_stack

    seed = load_stack(ROOT / "stacks" / "seed-recipe.yaml", lint=False).stack
    demo = load_stack("demo", lint=False).stack
    # The launcher names a token file under the state dir; the demo has no token, so the
    # path is not in the text, but keep the generation off the user's own state dir.
    os.environ.setdefault("SPARK_STACK_HOME", tempfile.mkdtemp(prefix="spark-stack-examples-"))
    return {
        HERE / "litellm_config.yaml": render_litellm_config(seed, resolve(seed)),
        HERE / "claude-demo": render_launcher(
            resolve(demo), token_path=token_file(demo.name), stack_file="demo"
        ),
    }


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for path, text in generated().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current == text:
            continue
        stale.append(path.name)
        if not check:
            path.write_text(text, encoding="utf-8")
            if path.name.startswith("claude-"):
                path.chmod(0o755)
    if check and stale:
        print(f"stale: {', '.join(stale)}; run: python examples/regenerate.py", file=sys.stderr)
        return 1
    for name in stale:
        print(f"wrote examples/{name}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
