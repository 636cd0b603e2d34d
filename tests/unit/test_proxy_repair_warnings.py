"""Repairing model output must not leak Python's compiler warnings into the proxy's log."""

from __future__ import annotations

import warnings

from spark_stack.proxy.repair import repair_arguments


def test_python_literal_with_a_deprecated_escape_repairs_silently() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert repair_arguments("{'path': 'a\\ b', 'ok': True}") == '{"path":"a\\\\ b","ok":true}'
