"""Reference values, signed trust policies and the Level-of-Assurance ladder (pure, no I/O)."""
