"""The worker: `ds worker`, the same loop in every backend."""
