"""Where an application's connection string lives; see :mod:`restorekit.sinks.base`."""

from restorekit.sinks.base import ConnectionStore, Revision, get_store, register
from restorekit.sinks.envfile import EnvFileStore

__all__ = ["ConnectionStore", "EnvFileStore", "Revision", "get_store", "register"]
