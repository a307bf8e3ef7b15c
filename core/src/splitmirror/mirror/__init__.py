"""Mirror providers: keep a mirror in step with the primary, split it, re-establish it."""
