"""Deploying a stack: ``up``, ``down``, ``status`` and the host edges they use.

Before any of its modules imports paramiko, ``invoke`` is deferred (:mod:`.lazy_invoke`).
"""

from . import lazy_invoke

lazy_invoke.install()
