"""The smoke report: every check's verdict and timings, as one JSON-ready object."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import EXIT_OK, EXIT_UNHEALTHY
from .checks import CheckResult
from .endpoints import Endpoints

REPORT_VERSION = 1
DRIFT_HINT = "the running container differs from the stack file: run `spark-stack up`"


@dataclass
class SmokeReport:
    """The outcome of one smoke run; ``ok`` only when every check passed."""

    stack: str
    endpoints: Endpoints
    checks: list[CheckResult] = field(default_factory=list)
    total_ms: float = 0.0
    up_ms: float | None = None
    error: str | None = None  # set when the run could not even start its checks
    failure_exit_code: int = EXIT_UNHEALTHY  # a failed `up` keeps its own code (e.g. 3)

    @property
    def ok(self) -> bool:
        return self.error is None and bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else self.failure_exit_code

    @property
    def hint(self) -> str | None:
        """What to do when what runs is not what the stack file asks for (drift)."""
        if any(m.drift_fields for m in self.endpoints.models):
            return DRIFT_HINT
        return None

    def failed(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.ok]

    def ttft_ms(self, model: str) -> dict[str, float | None]:
        """The known-answer prompt's TTFT direct and through the proxy, and what it added."""
        by: dict[tuple[str, str], float | None] = {}
        for c in self.checks:  # a replicated model's: its first replica's
            by.setdefault((c.name, c.model), c.ttft_ms)
        direct = by.get(("direct_completion", model))
        proxy = by.get(("completion", model))
        added = None if direct is None or proxy is None else proxy - direct
        return {
            "direct": _round(direct),
            "proxy": _round(proxy),
            "proxy_added": _round(added),
        }

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object; its keys are a stable interface for CI pipelines."""
        return {
            "version": REPORT_VERSION,
            "ok": self.ok,
            "exit_code": self.exit_code,
            "stack": self.stack,
            "host": self.endpoints.host,
            "proxy_url": self.endpoints.proxy_url,
            "models": [
                {
                    "name": m.name,
                    "served_model": m.served_name,
                    "endpoint": m.base_url,
                    "image": m.image,
                    "image_digest": m.image_digest,
                    "image_id": m.image_id,
                    "drift": bool(m.drift_fields),
                    "drift_fields": list(m.drift_fields),
                    "ttft_ms": self.ttft_ms(m.name),
                    "replicas": [{"name": r.replica, "endpoint": r.base_url}
                                 for r in m.replicas],
                }
                for m in self.endpoints.models
            ],
            "checks": [c.to_dict() for c in self.checks],
            "failed": [c.label for c in self.failed()],
            "error": self.error,
            "hint": self.hint,
            "timings": {
                "total_ms": round(self.total_ms, 1),
                "up_ms": _round(self.up_ms),
            },
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 1)
