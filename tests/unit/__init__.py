"""Unit tests (a package, so that test module names may repeat in tests/e2e)."""
