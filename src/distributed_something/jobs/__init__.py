"""Job files: parsing every accepted format into tasks."""
