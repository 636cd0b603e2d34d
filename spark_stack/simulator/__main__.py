"""`python -m spark_stack.simulator serve MODEL [vLLM flags...]`."""

from __future__ import annotations

import sys

from .server import main

sys.exit(main())
