"""Use cases: one module per command family. The CLI only parses arguments and prints."""
