"""Load the refvm pytest plugin for every pytest run in this tree."""
pytest_plugins = ("harness.pytest_plugin.plugin",)
