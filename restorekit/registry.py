"""How the core finds an adapter by name: a registry maps a kind to an import path, and the
module behind it (and its SDK) is imported only when that kind is used (Barman's factory).
Providers, connection stores and application platforms each keep their own :class:`Registry`,
so an unknown kind fails the same way everywhere: naming what is available (Patroni's
``get_dcs``).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from restorekit.errors import ConfigError


def import_path(path: str) -> Any:
    """The object ``"package.module:Name"`` names, importing its module now."""
    module_name, _, name = path.partition(":")
    return getattr(importlib.import_module(module_name), name)


class Registry(dict[str, str]):
    """kind -> ``"package.module:Class"`` for one sort of adapter (``what``, named in errors).
    A plain dict otherwise, so a test can save its content and put it back."""

    def __init__(self, what: str, paths: Mapping[str, str]) -> None:
        super().__init__(paths)
        self.what = what

    def register(self, kind: str, path: str) -> None:
        """Register a class by import path (tests register fakes this way)."""
        self[kind] = path

    def load(self, kind: str) -> Any:
        """The class registered for ``kind``, its module (and SDK) imported only now.

        Raises:
            ConfigError: ``kind`` is not registered; the message lists the kinds that are.
        """
        try:
            path = self[kind]
        except KeyError:
            raise ConfigError(
                f"unknown {self.what} {kind!r}; available: {', '.join(sorted(self))}"
            ) from None
        return import_path(path)
