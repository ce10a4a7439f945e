"""Registers the project's pytest plugin (harness/tools/plugin.py); all the logic lives there."""

pytest_plugins = ["harness.tools.plugin"]
