"""Agent files: their schema, loading with located errors, and in-place value edits."""
