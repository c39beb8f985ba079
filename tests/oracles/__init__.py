"""Independent references that only the tests use."""
