"""The run report: every submitted task accounted for, as JSON and as a terminal summary."""
