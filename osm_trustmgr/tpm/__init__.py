"""Pure TPM 2.0 evidence primitives: parsing and verification over bytes, no I/O."""
