import voxbridge


def test_public_api_is_curated() -> None:
    assert voxbridge.__all__ == [
        "Agent",
        "BrainError",
        "ConfigError",
        "Context",
        "DecryptError",
        "DirectoryLoad",
        "Fleet",
        "KeyPermissionError",
        "Keyring",
        "KeysError",
        "LLMConfig",
        "ListenError",
        "PermanentFailure",
        "Plugin",
        "PluginConfig",
        "Problem",
        "RestartPolicy",
        "Secret",
        "ToolServerError",
        "UsageError",
        "VoxbridgeError",
        "WriteError",
        "__version__",
        "agent_schema",
        "installed_plugins",
        "load_agent_file",
        "load_directory",
        "load_keyring",
        "parse_agent",
        "parse_duration",
        "reveal",
    ]
    for name in voxbridge.__all__:
        assert hasattr(voxbridge, name), name


def test_every_error_has_a_docstring_and_an_exit_code() -> None:
    for name in ("ConfigError", "DecryptError", "KeyPermissionError", "KeysError", "UsageError"):
        cls = getattr(voxbridge, name)
        assert issubclass(cls, voxbridge.VoxbridgeError)
        assert cls.__doc__
    assert voxbridge.KeyPermissionError.exit_code == 77
    assert voxbridge.ConfigError.exit_code == 78
    assert voxbridge.UsageError.exit_code == 2
    assert voxbridge.ListenError.exit_code == 69
