"""Where the application runs; see :mod:`restorekit.apps.base`.

The names are loaded on first use: ``python -m restorekit.apps.demo_app`` (the demo's
application, started for every installation) imports this package first, and needs none of
the platform code (httpx, pydantic) to serve its pages.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from restorekit.apps.base import AppPlatform, AppState, get_app_platform, register
    from restorekit.apps.local import LocalProcessApp

__all__ = ["AppPlatform", "AppState", "LocalProcessApp", "get_app_platform", "register"]


def __getattr__(name: str) -> Any:
    if name == "LocalProcessApp":
        from restorekit.apps.local import LocalProcessApp

        return LocalProcessApp
    if name in __all__:
        from restorekit.apps import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
