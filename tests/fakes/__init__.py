"""In-memory stand-ins for the host edge, for fast unit tests of the use cases."""
