"""pytest11 entry point of voiceagent: loads ``voiceagent.testing.pytest_plugin`` (the ``replay`` fixture).

A top-level module on purpose (as Hypothesis does): pytest imports entry points before pytest-cov starts
measuring, so this module imports nothing of voiceagent; the plugin is loaded at ``pytest_configure``,
after coverage has started, and ``pytest --cov`` sees voiceagent's import-time lines too.
``-p no:voiceagent`` disables it.
"""

from __future__ import annotations

import pytest

PLUGIN = "voiceagent.testing.pytest_plugin"


def pytest_configure(config: pytest.Config) -> None:
    if not config.pluginmanager.has_plugin(PLUGIN):  # unless loaded already with -p
        config.pluginmanager.import_plugin(PLUGIN)
