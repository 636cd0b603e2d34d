"""spark-stack: run Claude Code on a self-hosted model served by vLLM on a DGX Spark."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
