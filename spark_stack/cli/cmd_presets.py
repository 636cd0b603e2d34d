"""`spark-stack presets`: list the model presets (built-in and the user's), `presets show NAME`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .common import JsonOption, console, print_json, stack_path, use_json

if TYPE_CHECKING:
    from ..stack.presets import Preset

presets_app = typer.Typer(
    help="List the model presets: built-in ones and yours "
    "($XDG_CONFIG_HOME/spark-stack/presets/NAME.yaml).",
    invoke_without_command=True,
)

PresetsStackOption = Annotated[
    str | None,
    typer.Option("--stack", "-s", help="Resolve a preset's relative path from this stack "
                 "file's directory (as its `preset:` does), not the current one.",
                 show_default=False),
]


@presets_app.callback()
def presets(ctx: typer.Context, json: JsonOption = False,
            stack: PresetsStackOption = None) -> None:
    """List every preset: its name, where it comes from and a one-line description."""
    from ..stack.loader import preset_problems
    from ..stack.presets import available, read_preset

    if ctx.invoked_subcommand is not None:
        return
    use_json(json)
    rows = []
    for file in available().values():
        preset = read_preset(file)
        problems = preset.problems or preset_problems(preset)
        rows.append((preset, problems))
    if json:
        print_json([{**_summary(p), "ok": not problems,
                     "problems": [x.render() for x in problems]} for p, problems in rows])
        return
    out = console()
    width = max((len(p.name) for p, _ in rows), default=0)
    for preset, problems in rows:
        text = (preset.description if not problems
                else f"BROKEN: {problems[0].render()}")
        out.print(f"{preset.name.ljust(width)}  {text}", markup=False)
        out.print(f"{''.ljust(width)}  from {preset.file.where}", markup=False, style="dim")
    out.print("`spark-stack presets show NAME` prints one; `init --preset NAME` (or a path) "
              "uses one.", markup=False)


@presets_app.command("show")
def show(
    name: Annotated[str, typer.Argument(help="A preset's name, or a preset file's path.")],
    json: JsonOption = False,
    stack: PresetsStackOption = None,
) -> None:
    """Print a preset file as it is (or its settings with --json); a broken one lists its
    problems at file:line:col."""
    from ..stack.loader import load_preset

    use_json(json)
    chosen = stack_path(stack)
    base = Path(chosen).absolute().parent if chosen else None
    preset = load_preset(name, base)
    if json:
        print_json({**_summary(preset), "sources": list(preset.sources),
                    "settings": preset.settings})
        return
    console(stderr=True).print(f"# preset {preset.name}, from {preset.file.where}",
                               markup=False)
    sys.stdout.write(preset.text if preset.text.endswith("\n") else preset.text + "\n")


def _summary(preset: Preset) -> dict[str, Any]:
    return {
        "name": preset.name, "origin": preset.file.origin, "path": str(preset.file.path),
        "replaces_builtin": preset.file.replaces_builtin, "description": preset.description,
        "vllm_version": preset.vllm_version,
    }


def register(app: typer.Typer) -> None:
    app.add_typer(presets_app, name="presets")
