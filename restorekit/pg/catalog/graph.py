"""The foreign-key graph: parents, children, load order and cycles."""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Mapping, Sequence

from restorekit.errors import ConfigError
from restorekit.pg.catalog.names import ForeignKey, TableRef

# -- the foreign-key graph ---------------------------------------------------------------------


class FkGraph:
    """Parent/child relations between tables, from a list of foreign keys.

    An edge runs from the referenced (parent) table to the referencing (child) table. Self
    references (``employees.manager_id -> employees.id``) are kept for :meth:`parents_of` and
    :meth:`children_of` but never constrain an ordering.

    Cycles between different tables (``a -> b -> a``) make :meth:`topological_order` raise
    :class:`~restorekit.errors.ConfigError` naming the tables of every cycle, unless it is called
    with ``break_cycles=True``: then each cycle is emitted as a block, in name order, once all of
    its parents outside the cycle have been emitted. Loading such a block needs deferred or
    nullable foreign keys; the graph cannot decide that for you.
    """

    def __init__(self, fks: Iterable[ForeignKey]) -> None:
        self.foreign_keys: tuple[ForeignKey, ...] = tuple(fks)
        self._parents: dict[TableRef, set[TableRef]] = {}
        self._children: dict[TableRef, set[TableRef]] = {}
        self._cascade_children: dict[TableRef, set[TableRef]] = {}
        for fk in self.foreign_keys:
            self._parents.setdefault(fk.child, set()).add(fk.parent)
            self._children.setdefault(fk.parent, set()).add(fk.child)
            if fk.on_delete == "cascade":
                self._cascade_children.setdefault(fk.parent, set()).add(fk.child)

    @property
    def tables(self) -> list[TableRef]:
        """Every table that takes part in at least one foreign key, sorted."""
        return sorted(set(self._parents) | set(self._children))

    def parents_of(self, table: TableRef) -> list[TableRef]:
        """Tables ``table`` references, sorted (itself included when self-referencing)."""
        return sorted(self._parents.get(table, ()))

    def children_of(self, table: TableRef) -> list[TableRef]:
        """Tables that reference ``table``, sorted (itself included when self-referencing)."""
        return sorted(self._children.get(table, ()))

    def topological_order(
        self, tables: Iterable[TableRef], *, break_cycles: bool = False
    ) -> list[TableRef]:
        """Order ``tables`` so that every parent comes before its children.

        Only foreign keys between two of the given tables count. Ties are broken by name, so the
        result is the same for the same input on every run.

        Args:
            tables: the tables to order; unknown tables are fine (they have no edges).
            break_cycles: emit cycles as name-ordered blocks instead of raising.

        Raises:
            ConfigError: the tables contain a foreign-key cycle and ``break_cycles`` is False.
        """
        nodes = sorted(set(tables))
        members = set(nodes)
        edges = {
            t: sorted(c for c in self._children.get(t, ()) if c in members and c != t)
            for t in nodes
        }
        components = _strongly_connected(nodes, edges)
        cycles = [comp for comp in components if len(comp) > 1]
        if cycles and not break_cycles:
            described = "; ".join(" <-> ".join(str(t) for t in comp) for comp in cycles)
            raise ConfigError(
                f"foreign-key cycle between tables: {described} "
                "(load them with deferred constraints, or ask for break_cycles=True)"
            )

        # Kahn's algorithm over the condensation (each cycle is one node), smallest name first.
        comp_of = {t: i for i, comp in enumerate(components) for t in comp}
        indegree = [0] * len(components)
        succ: list[set[int]] = [set() for _ in components]
        for parent, kids in edges.items():
            for kid in kids:
                a, b = comp_of[parent], comp_of[kid]
                if a != b and b not in succ[a]:
                    succ[a].add(b)
                    indegree[b] += 1
        ready = [(components[i][0], i) for i in range(len(components)) if indegree[i] == 0]
        heapq.heapify(ready)
        order: list[TableRef] = []
        while ready:
            _, i = heapq.heappop(ready)
            order.extend(components[i])
            for j in succ[i]:
                indegree[j] -= 1
                if indegree[j] == 0:
                    heapq.heappush(ready, (components[j][0], j))
        return order

    def cascade_closure(
        self, tables: Iterable[TableRef], *, break_cycles: bool = False
    ) -> list[TableRef]:
        """``tables`` plus every table an ON DELETE CASCADE reaches from them, parents first.

        This is the set a ``DELETE`` on ``tables`` can have removed rows from: deleting a user
        takes its clients and, through them (and directly), its appointments.
        ON DELETE SET NULL / SET DEFAULT children are not included: their rows survive, changed.

        Raises:
            ConfigError: the closure contains a foreign-key cycle and ``break_cycles`` is False.
        """
        seen: set[TableRef] = set()
        stack = list(tables)
        while stack:
            table = stack.pop()
            if table in seen:
                continue
            seen.add(table)
            stack.extend(self._cascade_children.get(table, ()))
        return self.topological_order(seen, break_cycles=break_cycles)


def _strongly_connected(
    nodes: Sequence[TableRef], edges: Mapping[TableRef, Sequence[TableRef]]
) -> list[list[TableRef]]:
    """Tarjan's algorithm, iterative (a schema with thousands of tables must not hit the
    recursion limit). Each component is returned sorted."""
    index: dict[TableRef, int] = {}
    low: dict[TableRef, int] = {}
    on_stack: set[TableRef] = set()
    stack: list[TableRef] = []
    result: list[list[TableRef]] = []
    counter = 0
    for root in nodes:
        if root in index:
            continue
        work: list[tuple[TableRef, int]] = [(root, 0)]
        while work:
            node, pos = work.pop()
            if pos == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            kids = edges.get(node, ())
            descended = False
            while pos < len(kids):
                kid = kids[pos]
                pos += 1
                if kid not in index:
                    work.append((node, pos))
                    work.append((kid, 0))
                    descended = True
                    break
                if kid in on_stack:
                    low[node] = min(low[node], index[kid])
            if descended:
                continue
            if low[node] == index[node]:
                comp: list[TableRef] = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    comp.append(member)
                    if member == node:
                        break
                result.append(sorted(comp))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return result
