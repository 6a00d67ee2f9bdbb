"""The `ds` command line: parses arguments, calls use cases, prints. No logic, no AWS."""
