"""voxbridge keeps a fleet of AI agents online, driven by a directory of YAML files.

The public API: loading agent files, the typed configuration, secrets, plugin types and the
exception tree. Everything else is internal and may change.
"""

from ._version import __version__
from .config.load import DirectoryLoad, load_agent_file, load_directory, parse_agent
from .config.model import Agent, LLMConfig, PluginConfig, RestartPolicy, reveal
from .config.schema import agent_schema
from .errors import (
    ConfigError,
    DecryptError,
    KeyPermissionError,
    KeysError,
    Problem,
    UsageError,
    VoxbridgeError,
    WriteError,
)
from .plugins.api import Plugin, installed_plugins
from .secrets.crypto import Secret
from .secrets.keys import Keyring, load_keyring

__all__ = [
    "Agent",
    "ConfigError",
    "DecryptError",
    "DirectoryLoad",
    "KeyPermissionError",
    "Keyring",
    "KeysError",
    "LLMConfig",
    "Plugin",
    "PluginConfig",
    "Problem",
    "RestartPolicy",
    "Secret",
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
    "reveal",
]
