"""Plugin types: the API third-party packages implement, and the built-in ones."""

from .api import ENTRY_POINT_GROUP, Plugin, installed_plugins

__all__ = ["ENTRY_POINT_GROUP", "Plugin", "installed_plugins"]
