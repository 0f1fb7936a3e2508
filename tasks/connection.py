"""Swap the application's connection string, with a rollback hook.

Used inside ``with transaction():`` in a flow: if anything after the swap in the same
transaction fails (redeploy, health check), Prefect runs the on_rollback hook, which writes the
previous connection string back and redeploys the application on it.
"""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.transactions import Transaction, get_transaction

from restorekit.errors import ConfigError
from restorekit.models import RestoredRef
from restorekit.sinks.base import Revision
from tasks._runtime import TargetRef, logger, runtime


@task(name="swap-connection-string", cache_policy=NO_CACHE)
def swap_connection_string(ref: TargetRef, restored: RestoredRef) -> Revision:
    """Point the application's DATABASE_URL at the restored database (runbook step 4).

    The store's own write is atomic (write, read back, else put the old value back); the
    returned Revision (secret-free) is what the rollback hook restores.
    """
    rt = runtime(ref)
    if rt.store is None:
        raise ConfigError(
            f"target {ref.target!r} has no connection store configured: nothing to swap; "
            "set [targets.NAME.connection] in restorekit.toml"
        )
    revision = rt.store.write(rt.dsn_for(restored))
    txn = get_transaction()
    if txn is not None:
        txn.set("revision", revision.model_dump(mode="json"))
        txn.set("target", ref.model_dump())
    logger().info("connection string in %s now points at %s", rt.store.describe(), restored.display)
    return revision


@swap_connection_string.on_rollback
def put_back_connection_string(txn: Transaction) -> None:
    """Rollback: the previous connection string comes back, and the app is redeployed on it."""
    ref = TargetRef(**txn.get("target"))
    revision = Revision(**txn.get("revision"))
    rt = runtime(ref)
    assert rt.store is not None
    rt.store.restore(revision)
    logger().warning("rolled back: the connection string in %s is the previous one again",
                     rt.store.describe())
    if rt.app is not None:
        rt.app.redeploy(reason="restorekit rollback: previous connection string")
