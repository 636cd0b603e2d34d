"""Options shared by the commands that reach the host (up, down, status, logs, plan --diff)."""

from __future__ import annotations

from typing import Annotated

import typer

TrustOption = Annotated[
    bool,
    typer.Option("--trust-host-key",
                 help="Accept an unknown SSH host key and add it to ~/.ssh/known_hosts."),
]
WaitLockOption = Annotated[
    float,
    typer.Option("--wait-lock", metavar="SECONDS",
                 help="Wait this long for another up/down on the same stack to finish."),
]
