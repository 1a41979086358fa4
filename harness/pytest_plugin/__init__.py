"""pytest glue, kept apart from the harness proper (as labgrid keeps its pytest plugin)."""
