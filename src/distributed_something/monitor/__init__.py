"""The monitor: watches a run, applies the pure policy, cleans up, writes the report."""
