"""serrano test suite."""
