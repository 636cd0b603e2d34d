"""`spark-stack claude --host HOST`: from zero to a running stack, then Claude Code.

Without a stack file in play (no ``-s``, no ``$SPARK_STACK``, no ``./spark-stack.yaml``): look at
the host over SSH, choose a preset (or take ``--preset``), check that the host can run it, show
the stack file and what ``up`` will do, write ``./spark-stack.yaml`` (asking once unless
``--yes``) and run ``up``. With one: ``--host`` must name its host, and ``up`` (a no-op when
nothing changed) runs before Claude Code. Everything spark-stack says goes to stderr: stdout is
Claude Code's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .common import console, load, relpath, stack_path
from .progress import JsonEvents

if TYPE_CHECKING:
    from ..deploy.report import Reporter
    from ..deployment import Deployment
    from ..first_run import HostLook
    from ..stack import schema
    from ..stack.presets import Preset

STACK_FILE = Path("spark-stack.yaml")


def bring_up(stack_option: str | None, host: str | None, preset: str | None,
             image: str | None, *, yes: bool, json: bool, trust_host_key: bool) -> str:
    """Make sure a stack file exists and its stack runs; returns the stack file's path."""
    from ..deploy.up import UpOptions
    from ..errors import UsageError
    from ..first_run import parse_host, same_host
    from .cmd_up import deploy

    chosen = stack_path(stack_option)
    existing = Path(chosen) if chosen else (STACK_FILE if STACK_FILE.exists() else None)
    wanted = parse_host(host) if host is not None else None
    say = _Say(json)
    if existing is not None:
        loaded = load(str(existing))
        if wanted is not None and not same_host(loaded.stack, wanted):
            have = loaded.stack.host
            where = (f"host {have.user + '@' if have.user else ''}{have.address}"
                     if have else "no host")
            raise UsageError(
                f"{relpath(loaded.path)} is for {where}, not {host}",
                fix="drop --host to use that stack, or run from another directory (or pass "
                "-s with another stack file) to start one for this host")
        if preset is not None or image is not None:
            say.step(f"using {relpath(loaded.path)}: --preset and --image only shape a new "
                     "stack file")
    else:
        if wanted is None:
            raise UsageError("no stack file here (./spark-stack.yaml)",
                             fix="pass --host YOUR_SPARK to write one and deploy it, or -s "
                             "PATH for another one")
        target = _first_run(wanted, host or "", preset, image, yes=yes, say=say,
                            trust_host_key=trust_host_key)
        loaded = load(str(target))
    options = UpOptions(trust_host_key=trust_host_key,
                        stack_file=chosen and relpath(loaded.path))
    deploy(loaded, options, json=json, stdout=False)
    return str(loaded.path)


class _Say:
    """One line per step on stderr: plain text for a person, a JSON event with --json."""

    def __init__(self, json: bool) -> None:
        self.reporter: Reporter | None = JsonEvents() if json else None
        self.out = console(stderr=True)

    def step(self, message: str) -> None:
        if self.reporter is not None:
            self.reporter.step(message)
        else:
            self.out.print(message, markup=False)

    def lines(self, title: str, lines: list[str]) -> None:
        if self.reporter is not None:
            self.reporter.step(title + "\n" + "\n".join(lines))
            return
        self.out.print(title, markup=False)
        for line in lines:
            self.out.print(f"  {line}", markup=False)


def _first_run(wanted: schema.HostConfig, host_text: str, preset_ref: str | None,
               image: str | None, *, yes: bool, say: _Say, trust_host_key: bool) -> Path:
    """Look, choose, check, show, ask, write: nothing is written unless every check passes."""
    from ..deploy.preflight import raise_failures
    from ..deploy.session import target_for
    from ..deploy.ssh import connect
    from ..deployment import resolve
    from ..first_run import describe, free_proxy_port, look, prechecks, recommend, with_images
    from ..launcher import default_launcher_path
    from ..paths import write_atomic
    from ..stack.loader import load_preset, load_stack_text

    preset = load_preset(preset_ref) if preset_ref is not None else None  # a bad one: no SSH
    say.step(f"connecting to {host_text}")
    conn = connect(target_for(wanted), trust_host_key=trust_host_key)
    try:
        found = look(conn)
        say.lines(f"{conn.display}:", describe(found))
        if preset is None:
            name, why = recommend(found)
            preset = load_preset(name)
            say.step(f"preset {name}: {why}")
        elif preset.file.replaces_builtin:
            say.step(f"preset {preset.name}: your {preset.file.path} (it replaces the built-in "
                     "one)")
        command = (f"spark-stack claude --host {host_text} --preset {preset_ref or preset.name}"
                   + (f" --image {image}" if image else ""))
        text = _draft(preset, wanted, command, image, free_proxy_port())
        loaded = load_stack_text(text, filename=str(STACK_FILE), path=STACK_FILE)
        deployment = resolve(loaded.stack)
        images = sorted({m.container.image for m in deployment.models if m.container})
        found = with_images(conn, found, images)
        checks = prechecks(deployment, found)
    finally:
        conn.close()
    say.lines("checks:", [f"{'ok' if c.ok else 'FAILED'} {c.name}: {c.message}"
                          for c in checks])
    raise_failures(checks)  # before anything is written or started
    say.lines(f"the stack file ./{STACK_FILE}:", text.rstrip("\n").splitlines())
    say.lines("up will:", _up_steps(deployment, found,
                                    str(default_launcher_path(loaded.stack))))
    _confirm(yes, say)
    write_atomic(STACK_FILE, text)
    say.step(f"wrote ./{STACK_FILE} (stack {loaded.stack.name}; `spark-stack claude` uses it "
             "from now on)")
    return STACK_FILE


def _draft(preset: Preset, wanted: schema.HostConfig, command: str, image: str | None,
           proxy_port: int) -> str:
    """The stack file for this directory: the stack is named after it (as docker compose
    names a project), so two checkouts are two stacks."""
    from ..first_run import draft
    from ..stack.template import preset_reference, stack_name_for

    return draft(preset, wanted, name=stack_name_for(Path.cwd().name),
                 reference=preset_reference(preset, Path.cwd()), image=image,
                 listen=f"127.0.0.1:{proxy_port}", command=command)


def _up_steps(deployment: Deployment, found: HostLook, launcher: str) -> list[str]:
    from ..first_run import up_steps

    return [*up_steps(deployment, found, launcher), "then start Claude Code"]


def _confirm(yes: bool, say: _Say) -> None:
    from ..errors import UsageError

    if yes:
        return
    if say.reporter is not None or not sys.stdin.isatty():
        raise UsageError("not writing the stack file without asking",
                         fix="pass --yes to write it and deploy without a question")
    import typer

    if not typer.confirm(f"write ./{STACK_FILE} and run up?", default=True, err=True):
        raise UsageError("stopped: nothing was written",
                         fix="pass --preset NAME (see `spark-stack presets`) or --image to "
                         "change what is deployed, or `spark-stack init --host` to edit the "
                         "file first")
