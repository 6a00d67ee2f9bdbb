"""Distributed-Something: run a containerized command over many independent jobs."""

__version__ = "0.1.0"
