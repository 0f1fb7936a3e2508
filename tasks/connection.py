"""Swap the application's connection string(s), with a rollback hook.

Used inside ``with transaction():`` in a flow: if anything after the swap in the same
transaction fails (redeploy, health check), Prefect runs the on_rollback hook, which writes the
previous connection strings back and redeploys the application on them.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction, get_transaction

from restorekit.errors import ConfigError
from restorekit.models import RestoredRef
from restorekit.sinks.base import Revision
from restorekit.sinks.group import swap
from tasks._runtime import TargetRef, logger, runtime


@task(name="swap-connection-string", cache_policy=NO_CACHE)
def swap_connection_string(ref: TargetRef, restored: RestoredRef) -> Revision:
    """Point the application's DATABASE_URL (and every key configured with it, e.g.
    DIRECT_URL) at the restored database (runbook step 4).

    Each key keeps its form and options: its current value is re-pointed (host, port,
    database), at the restored database's pooled host when the key went through a pooler. The
    keys are written as one (a failed write puts back those already written); the returned
    composite Revision (secret-free) is what the rollback hook restores.

    Example:
        >>> with transaction():
        ...     swap_connection_string(ref, restored)
        ...     check_health(ref)          # raising here puts every key back
    """
    rt = runtime(ref)
    if rt.store is None:
        raise ConfigError(
            f"target {ref.target!r} has no connection store configured: nothing to swap; "
            "set [targets.NAME.connection] in restorekit.toml"
        )
    direct, pooled = rt.locations_for(restored)
    swapped = swap(rt.store, direct, pooled)
    txn = get_transaction()
    if txn is not None:
        txn.set("revision", swapped.revision.model_dump(mode="json"))
        txn.set("target", ref.model_dump())
    for key, store in rt.store.stores.items():
        how = swapped.how[key]
        # A key that had no value is worth a look: say so louder.
        log = logger().warning if how.startswith("had no value") else logger().info
        log("%s now points at %s (%s)", store.describe(), swapped.shown[key], how)
    return swapped.revision


@swap_connection_string.on_rollback
def put_back_connection_string(txn: Transaction) -> None:
    """Rollback: the previous connection strings come back (last key first), and the app is
    redeployed on them."""
    ref = TargetRef(**txn.get("target"))
    revision = Revision(**txn.get("revision"))
    rt = runtime(ref)
    assert rt.store is not None
    rt.store.restore(revision)
    logger().warning("rolled back: the connection string in %s is the previous one again",
                     rt.store.describe())
    if rt.app is not None:
        rt.app.redeploy(reason="restorekit rollback: previous connection string")
