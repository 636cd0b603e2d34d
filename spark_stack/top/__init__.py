"""``spark-stack top``: the stack's live figures from vLLM's and the proxy's ``/metrics`` and
the hosts' own facts.

:mod:`.promtext` parses Prometheus text, :mod:`.figures` turns two reads into figures (pure),
:mod:`.sampler` reads them (HTTP to the metrics pages, SSH for the hosts).
"""
