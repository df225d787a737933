"""voxbridge keeps a fleet of AI agents online, driven by a directory of YAML files.

The public API: loading agent files, the typed configuration, secrets, what plugin types are
made of (Plugin, Context, Fleet, PermanentFailure) and the exception tree. The runtime is reached
through ``voxbridge.runtime.run``; fakes for tests live in ``voxbridge.testing``.
"""

from ._version import __version__
from .config.duration import parse_duration
from .config.load import DirectoryLoad, load_agent_file, load_directory, parse_agent
from .config.model import Agent, LLMConfig, PluginConfig, RestartPolicy, reveal
from .config.schema import agent_schema
from .errors import (
    BrainError,
    ConfigError,
    DecryptError,
    KeyPermissionError,
    KeysError,
    ListenError,
    PermanentFailure,
    Problem,
    ToolServerError,
    UsageError,
    VoxbridgeError,
    WriteError,
)
from .plugins.api import Context, Fleet, Plugin, installed_plugins
from .secrets.crypto import Secret
from .secrets.keys import Keyring, load_keyring

__all__ = [
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
