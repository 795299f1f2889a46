"""The public surface of kong_credits.pluginserver is what __all__ says."""

import kong_credits.pluginserver as pluginserver


def test_all_names_exist_and_nothing_private_is_exported():
    assert all(hasattr(pluginserver, name) for name in pluginserver.__all__)
    assert not [name for name in pluginserver.__all__ if name.startswith("_")]
    assert len(set(pluginserver.__all__)) == len(pluginserver.__all__)


def test_command_is_named_for_registration():
    assert pluginserver.pluginserver_command.name == "pluginserver"
