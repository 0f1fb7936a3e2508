"""Where the application runs; see :mod:`restorekit.apps.base`."""

from restorekit.apps.base import AppPlatform, AppState, get_app_platform, register
from restorekit.apps.local import LocalProcessApp

__all__ = ["AppPlatform", "AppState", "LocalProcessApp", "get_app_platform", "register"]
