"""Registers the project's pytest plugin (harness/plugin.py); all the logic lives there."""

pytest_plugins = ["harness.plugin"]
