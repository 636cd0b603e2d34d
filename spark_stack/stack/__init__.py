"""The stack file: schema, loading, presets, checks and lint (pure, no I/O beyond reading it)."""
