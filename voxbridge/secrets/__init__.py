"""Secret values: HPKE sealing bound to field paths, key pairs, and in-place rewriting."""
