"""Several keys that move together: Prisma's pooled ``DATABASE_URL`` and unpooled ``DIRECT_URL``.

A :class:`StoreGroup` is one ordinary store per key (each built with ``key=``), so the stores
themselves know nothing of groups. The group writes key after key; when a write fails, the keys
already written are put back in reverse order before the error is raised (the failing store's
own write is atomic by the store contract). The composite :class:`~restorekit.sinks.base.Revision`
it returns (``store="group"``, one member revision per key, no secret) puts every key back in
reverse order; it is idempotent because each member's restore is.

:func:`swap_values` computes the new value of each key from its current one: the application's
string re-pointed at the restored database, in its own form (:func:`restorekit.pg.dsn.repoint`),
at the pooled location when the key went through a pooler and the restored database has one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from pydantic import SecretStr

from restorekit.errors import ConfigError, ProviderError, RestoreKitError
from restorekit.pg.dsn import display, libpq_dsn, location_of, repoint, to_url, uses_pooler
from restorekit.sinks.base import ConnectionStore, Revision

log = logging.getLogger(__name__)

GROUP = "group"


class StoreGroup:
    """The stores of the keys that move together, in order (the first is the primary key).

    Args:
        stores: key -> that key's store. Insertion order is write order.

    Example::

        group = StoreGroup({k: get_store("envfile", path=env, key=k)
                            for k in ("DATABASE_URL", "DIRECT_URL")})
        revision = group.write_all({"DATABASE_URL": pooled, "DIRECT_URL": direct})
        group.restore(revision)   # both back, DIRECT_URL first
    """

    kind: ClassVar[str] = GROUP

    def __init__(self, stores: Mapping[str, ConnectionStore]) -> None:
        if not stores:
            raise ConfigError("a connection store group needs at least one key")
        self.stores: dict[str, ConnectionStore] = dict(stores)

    def __repr__(self) -> str:
        return f"StoreGroup({self.stores!r})"

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(self.stores)

    @property
    def primary(self) -> ConnectionStore:
        return next(iter(self.stores.values()))

    def describe(self) -> str:
        return " + ".join(store.describe() for store in self.stores.values())

    def read(self) -> SecretStr:
        """The primary key's value (see :meth:`ConnectionStore.read`)."""
        return self.primary.read()

    def read_all(self, *, missing_ok: bool = False) -> dict[str, SecretStr | None]:
        """Every key's current value; with ``missing_ok``, None for a key the store lacks.

        Raises:
            ConfigError: a key is missing (without ``missing_ok``).
            ProviderError: a store could not be read.
        """
        values: dict[str, SecretStr | None] = {}
        for key, store in self.stores.items():
            try:
                values[key] = store.read()
            except ConfigError:
                if not missing_ok:
                    raise
                values[key] = None
        return values

    def write_all(self, values: Mapping[str, SecretStr]) -> Revision:
        """Write every key's new value, all or nothing; returns the composite revision.

        Raises:
            ConfigError: ``values`` does not name exactly the group's keys, or a value cannot
                be stored (the keys written before it are back).
            ProviderError: a write failed; the keys written before it are back (or the message
                says which could not be put back).
        """
        if set(values) != set(self.stores):
            raise ConfigError(f"{self.describe()}: new values for {sorted(values)}, but the "
                              f"keys are {list(self.stores)}")
        done: list[tuple[str, Revision]] = []
        for key, store in self.stores.items():
            try:
                done.append((key, store.write(values[key])))
            except RestoreKitError as exc:
                if not done:
                    raise
                failed = self._restore_each(list(reversed(done)))
                back = ", ".join(k for k, _ in reversed(done) if k not in failed)
                note = f"{back} put back" if back else ""
                if failed:
                    note += ("; " if note else "") + "putting back failed for " + "; ".join(
                        f"{k} ({e})" for k, e in failed.items())
                raise _with_note(exc, f"{exc}; the keys written before {key}: {note}") from exc
        return Revision(store=GROUP, location=self.describe(), ref=None,
                        members=tuple(revision for _, revision in done))

    def restore(self, revision: Revision) -> None:
        """Put back every key the write returning ``revision`` replaced, last key first.

        Idempotent. Every key is tried even when one fails; the error then names the failures.
        A single store's revision (from before the group) restores that key alone.

        Raises:
            ConfigError: ``revision`` is not of this group.
            ProviderError: some keys could not be put back (the others are back).
        """
        members = revision.members if revision.store == GROUP else (revision,)
        if revision.store == GROUP and revision.location != self.describe():
            raise ConfigError(f"revision of {revision.location!r} cannot be restored into "
                              f"{self.describe()}")
        owners = {store.describe(): key for key, store in self.stores.items()}
        pairs: list[tuple[str, Revision]] = []
        for member in members:
            key = owners.get(member.location)
            if key is None:
                raise ConfigError(f"revision of {member.store} {member.location!r} belongs to "
                                  f"no store of {self.describe()}")
            pairs.append((key, member))
        failed = self._restore_each(list(reversed(pairs)))
        if failed:
            raise ProviderError(
                f"{self.describe()}: putting back failed for "
                + "; ".join(f"{k} ({e})" for k, e in failed.items())
                + (f"; {', '.join(k for k, _ in pairs if k not in failed)} put back"
                   if len(failed) < len(pairs) else ""),
                provider=GROUP, operation="restore")

    def _restore_each(self, pairs: list[tuple[str, Revision]]) -> dict[str, RestoreKitError]:
        failed: dict[str, RestoreKitError] = {}
        for key, member in pairs:
            try:
                self.stores[key].restore(member)
            except RestoreKitError as exc:
                log.error("could not put %s back: %s", self.stores[key].describe(), exc)
                failed[key] = exc
        return failed


def _with_note(exc: RestoreKitError, message: str) -> RestoreKitError:
    """``exc``'s kind of error with ``message`` (the cause stays chained)."""
    if isinstance(exc, ConfigError):
        return ConfigError(message)
    if isinstance(exc, ProviderError):
        return ProviderError(message, provider=exc.provider, operation=exc.operation,
                             retryable=exc.is_retryable, status_code=exc.status_code)
    return ProviderError(message, provider=GROUP, operation="write")


@dataclass(frozen=True, slots=True)
class NewValue:
    """A key's new value and how it was made (secret-free ``how``, for the log)."""

    value: SecretStr
    how: str


def swap_values(current: Mapping[str, SecretStr | None], direct: SecretStr,
                pooled: SecretStr | None = None) -> dict[str, NewValue]:
    """The new value of every key: its current value re-pointed at the restored database.

    A key whose value goes through a pooler (``pgbouncer=true``, a Neon ``-pooler`` host) is
    pointed at ``pooled`` when there is one, else at ``direct``. The user, password, form and
    options are the key's own. A key without a value gets the direct location in URL form
    with the user and password of the first key that has one (its libpq options kept, its
    application-only options not: they may be pooler settings).

    Raises:
        ConfigError: a current value is not a valid connection string, or no key has a value
            (restorekit would have only its own role to give the application: it never does).
    """
    direct_at = location_of(direct.get_secret_value())
    pooled_at = location_of(pooled.get_secret_value()) if pooled is not None else None
    sibling = next(((k, v.get_secret_value()) for k, v in current.items() if v is not None), None)
    result: dict[str, NewValue] = {}
    for key, value in current.items():
        if value is None:
            if sibling is None:
                raise ConfigError(no_current_value(tuple(current)))
            else:
                new = libpq_dsn(repoint(to_url(sibling[1]), direct_at))
                result[key] = NewValue(SecretStr(new), f"had no value: the restored database's "
                                                       f"direct URL with {sibling[0]}'s user")
            continue
        text = value.get_secret_value()
        if uses_pooler(text):
            if pooled_at is not None:
                result[key] = NewValue(SecretStr(repoint(text, pooled_at)), "pooled")
            else:
                result[key] = NewValue(SecretStr(repoint(text, direct_at)),
                                       "direct (the restored database has no pooled host)")
        else:
            result[key] = NewValue(SecretStr(repoint(text, direct_at)), "direct")
    return result


def no_current_value(keys: tuple[str, ...]) -> str:
    """Why a swap cannot start when the application has no connection string to re-point."""
    return (f"none of {', '.join(keys)} has a value in the connection store: restorekit "
            "re-points the application's own connection string (its role and password) and "
            "never hands the application restorekit's own role. Set the application's current "
            "connection string there (for a sensitive Vercel variable: current_value_env), "
            "then run again.")


@dataclass(frozen=True, slots=True)
class Swapped:
    """What :func:`swap` did: the composite revision and, per key, how its value was made and
    where it points now (:func:`~restorekit.pg.dsn.display` form: no password)."""

    revision: Revision
    how: dict[str, str]
    shown: dict[str, str]


def swap(group: StoreGroup, direct: SecretStr, pooled: SecretStr | None = None) -> Swapped:
    """Re-point every key of ``group`` at the restored database (``direct``, and ``pooled``
    for keys that went through a pooler), all or nothing (see :meth:`StoreGroup.write_all`).

    Raises:
        ConfigError: a current value is not a valid connection string (nothing written), or a
            new value cannot be stored (nothing left written).
        ProviderError: a store failed (nothing left written, or the message says what is).
    """
    current = group.read_all(missing_ok=True)
    new = swap_values(current, direct, pooled)
    for key, value in new.items():
        if current[key] is None:
            log.warning("%s: %s", group.stores[key].describe(), value.how)
    revision = group.write_all({key: value.value for key, value in new.items()})
    return Swapped(revision=revision, how={key: value.how for key, value in new.items()},
                   shown={key: display(value.value.get_secret_value())
                          for key, value in new.items()})
