"""Database providers behind one interface; see :mod:`restorekit.providers.base`."""

from restorekit.providers.base import Capability, DatabaseProvider, get_provider

__all__ = ["Capability", "DatabaseProvider", "get_provider"]
