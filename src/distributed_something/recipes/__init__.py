"""Recipes: task → command. `command` is built in; tool recipes join the registry."""
