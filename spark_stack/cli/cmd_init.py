"""`spark-stack init`: write a commented stack file from a preset."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from .common import console, relpath, stack_path

if TYPE_CHECKING:
    from ..stack.presets import Preset

PRESET_HELP = (
    "Model preset: a name from `spark-stack presets` (default qwen3.6-35b-a3b-nvfp4-redhat), "
    "a preset file's path (./mine.yaml), or simulator (no Spark needed)."
)


def init(
    path: Annotated[
        Path | None,
        typer.Argument(help="Where to write it (default: --stack, else ./spark-stack.yaml).",
                       show_default=False),
    ] = None,
    stack: Annotated[
        str | None,
        typer.Option("--stack", "-s", help="The stack file to write, as PATH (default "
                     "./spark-stack.yaml, env SPARK_STACK).", show_default=False),
    ] = None,
    preset: Annotated[str, typer.Option("--preset", help=PRESET_HELP)] = (
        "qwen3.6-35b-a3b-nvfp4-redhat"
    ),
    host: Annotated[
        str | None,
        typer.Option("--host", help="The Spark's address: IP, hostname or ~/.ssh/config alias.",
                     show_default=False),
    ] = None,
    force: Annotated[bool, typer.Option("--force", "-f", help="Overwrite an existing file.")] = (
        False
    ),
) -> None:
    """Write a commented stack file for a model preset."""
    from ..errors import UsageError
    from ..paths import write_atomic
    from ..stack.loader import load_stack_text
    from ..stack.schema import check_address
    from ..stack.template import stack_name_for, stack_template

    target = path or Path(stack_path(stack) or "spark-stack.yaml")
    if host is not None:
        try:
            check_address(host)
        except ValueError as exc:
            raise UsageError(
                f"--host: {exc}", fix="pass an IP, a hostname or an ~/.ssh/config alias, "
                "e.g. --host spark (set the SSH user as user: in the file)",
            ) from None
    chosen = template_preset(preset)
    if target.exists() and not force:
        raise UsageError(
            f"{relpath(target)} already exists",
            fix="pass --force to overwrite it, or give another PATH",
        )
    text = stack_template(chosen, host, stack_name_for(target.stem),
                          reference=reference_for(chosen, target))
    load_stack_text(text, filename=str(target), path=target)  # must validate, or it is a bug
    write_atomic(target, text)
    out = console()
    out.print(f"wrote {relpath(target)} (preset {preset})", markup=False)
    flag = "" if target == Path("spark-stack.yaml") else f" -s {relpath(target)}"
    out.print(f"next: spark-stack{flag} validate, then spark-stack{flag} plan", markup=False)


def template_preset(reference: str) -> Preset | None:
    """The preset ``--preset`` names (None: the simulator stack), said aloud when it is a
    user's that replaces a built-in one; a broken file raises with its problems located."""
    from ..stack.loader import load_preset
    from ..stack.template import SIMULATOR

    if reference == SIMULATOR:
        return None
    preset = load_preset(reference)
    if preset.file.replaces_builtin:
        console(stderr=True).print(
            f"preset {preset.name}: using your {preset.file.path} (it replaces the built-in one)",
            markup=False)
    return preset


def reference_for(preset: Preset | None, target: Path) -> str | None:
    """How the stack file at ``target`` names the preset."""
    from ..stack.template import preset_reference

    if preset is None:
        return None
    return preset_reference(preset, target.absolute().parent)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
