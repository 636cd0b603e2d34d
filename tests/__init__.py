"""spark-stack's tests; a package so `python -m tests.testhost` and fixtures can import helpers."""
