"""FkGraph ordering and TableRef parsing, without a database."""

from __future__ import annotations

from itertools import pairwise

import pytest
from psycopg import sql

from restorekit.errors import ConfigError
from restorekit.pg.catalog import FkAction, FkGraph, ForeignKey, TableRef


def t(name: str, schema: str = "public") -> TableRef:
    return TableRef(schema, name)


def fk(
    child: str, parent: str, on_delete: FkAction = "no action", name: str | None = None
) -> ForeignKey:
    return ForeignKey(
        name=name or f"{child}_{parent}_fkey",
        child=t(child),
        child_columns=(f"{parent}_id",),
        parent=t(parent),
        parent_columns=("id",),
        on_delete=on_delete,
        on_update="no action",
    )


SAMPLE = FkGraph(
    [
        fk("clients", "users", "cascade"),
        fk("appointments", "users", "cascade"),
        fk("appointments", "clients", "cascade"),
        fk("invoices", "clients", "restrict"),
        fk("notes", "appointments", "set null"),
    ]
)


# -- FkGraph -----------------------------------------------------------------------------------


def test_parents_and_children() -> None:
    assert SAMPLE.parents_of(t("appointments")) == [t("clients"), t("users")]
    assert SAMPLE.children_of(t("users")) == [t("appointments"), t("clients")]
    assert SAMPLE.parents_of(t("users")) == []
    assert SAMPLE.children_of(t("unknown")) == []
    assert SAMPLE.tables == sorted(
        [t("users"), t("clients"), t("appointments"), t("invoices"), t("notes")]
    )


def test_topological_order_puts_parents_first() -> None:
    order = SAMPLE.topological_order(
        [t("notes"), t("appointments"), t("invoices"), t("clients"), t("users")]
    )
    assert order == [t("users"), t("clients"), t("appointments"), t("invoices"), t("notes")]
    for parent_fk in SAMPLE.foreign_keys:
        assert order.index(parent_fk.parent) < order.index(parent_fk.child)


def test_topological_order_is_deterministic_and_input_order_free() -> None:
    tables = [
        t("users"),
        t("clients"),
        t("appointments"),
        t("invoices"),
        t("notes"),
        t("zeta"),
        t("alpha"),
    ]
    first = SAMPLE.topological_order(tables)
    assert SAMPLE.topological_order(reversed(tables)) == first
    # Independent tables come in name order as soon as they are free.
    assert first[0] == t("alpha")
    assert first[-1] == t("zeta")


def test_topological_order_only_counts_edges_inside_the_set() -> None:
    # clients is not asked for, so appointments/users/notes only keep their direct edges.
    order = SAMPLE.topological_order([t("notes"), t("users"), t("appointments")])
    assert order == [t("users"), t("appointments"), t("notes")]
    assert SAMPLE.topological_order([]) == []


def test_self_reference_is_ignored_for_ordering() -> None:
    graph = FkGraph([fk("employees", "employees", "set null"), fk("employees", "departments")])
    assert graph.parents_of(t("employees")) == [t("departments"), t("employees")]
    assert graph.topological_order([t("employees"), t("departments")]) == [
        t("departments"),
        t("employees"),
    ]


def test_cycle_raises_naming_only_the_cycle() -> None:
    graph = FkGraph(
        [
            fk("b", "a"),
            fk("c", "b"),
            fk("a", "c"),  # a -> b -> c -> a
            fk("d", "c"),  # downstream of the cycle, not part of it
            fk("a", "root"),
        ]
    )
    with pytest.raises(ConfigError) as info:
        graph.topological_order([t("a"), t("b"), t("c"), t("d"), t("root")])
    message = str(info.value)
    assert "public.a" in message and "public.b" in message and "public.c" in message
    assert "public.d" not in message and "public.root" not in message


def test_break_cycles_emits_the_cycle_as_a_sorted_block() -> None:
    graph = FkGraph(
        [
            fk("b", "a"),
            fk("c", "b"),
            fk("a", "c"),
            fk("d", "c"),
            fk("a", "root"),
            fk("x", "y"),
            fk("y", "x"),
        ]
    )
    order = graph.topological_order(
        [t("d"), t("c"), t("b"), t("a"), t("root"), t("x"), t("y")], break_cycles=True
    )
    assert order == [t("root"), t("a"), t("b"), t("c"), t("d"), t("x"), t("y")]


def test_cascade_closure_follows_only_cascades() -> None:
    assert SAMPLE.cascade_closure([t("users")]) == [t("users"), t("clients"), t("appointments")]
    # invoices (RESTRICT) and notes (SET NULL) keep their rows, so they are not in the closure.
    assert SAMPLE.cascade_closure([t("clients")]) == [t("clients"), t("appointments")]
    assert SAMPLE.cascade_closure([t("appointments")]) == [t("appointments")]
    assert SAMPLE.cascade_closure([]) == []


def test_cascade_closure_with_self_reference_and_multiple_roots() -> None:
    graph = FkGraph(
        [
            fk("nodes", "nodes", "cascade"),
            fk("edges", "nodes", "cascade"),
            fk("tags", "labels", "cascade"),
        ]
    )
    assert graph.cascade_closure([t("tags"), t("nodes"), t("labels")]) == [
        t("labels"),
        t("nodes"),
        t("edges"),
        t("tags"),
    ]


def test_cascade_cycle_raises() -> None:
    graph = FkGraph([fk("a", "b", "cascade"), fk("b", "a", "cascade")])
    with pytest.raises(ConfigError, match="cycle"):
        graph.cascade_closure([t("a")])
    assert graph.cascade_closure([t("a")], break_cycles=True) == [t("a"), t("b")]


def test_long_chain_does_not_recurse() -> None:
    names = [f"t{i:05d}" for i in range(5000)]
    graph = FkGraph(fk(child, parent, "cascade") for parent, child in pairwise(names))
    order = graph.topological_order(t(n) for n in reversed(names))
    assert order == [t(n) for n in names]
    assert len(graph.cascade_closure([t(names[0])])) == 5000


# -- TableRef ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("users", TableRef("public", "users")),
        ("Users", TableRef("public", "users")),  # unquoted names fold, as in SQL
        ("app.users", TableRef("app", "users")),
        ('"MixedCase"', TableRef("public", "MixedCase")),
        ('"My Schema"."My.Table"', TableRef("My Schema", "My.Table")),
        ('"we""ird"."semi;colon"', TableRef('we"ird', "semi;colon")),
        ("café", TableRef("public", "café")),
        ("ÉCOLE", TableRef("public", "École")),  # only ASCII letters fold
        (' app . "x" ', TableRef("app", "x")),
    ],
)
def test_tableref_parse(text: str, expected: TableRef) -> None:
    assert TableRef.parse(text) == expected


def test_tableref_parse_default_schema() -> None:
    assert TableRef.parse("users", default_schema="app") == TableRef("app", "users")


@pytest.mark.parametrize(
    "text", ["", "  ", "a.b.c", '"unterminated', "semi;colon", "a b", '""', "a.", ".a", "x-y"]
)
def test_tableref_parse_rejects(text: str) -> None:
    with pytest.raises(ConfigError):
        TableRef.parse(text)


@pytest.mark.parametrize(
    "ref",
    [
        TableRef("public", "users"),
        TableRef("public", "MixedCase"),
        TableRef("My Schema", "My.Table"),
        TableRef("public", "Robert'); DROP TABLE students;--"),
        TableRef('we"ird', 'quo"te'),
        TableRef("public", "café"),
        TableRef("public", "1starts_with_digit"),
    ],
)
def test_tableref_str_round_trips(ref: TableRef) -> None:
    assert TableRef.parse(str(ref)) == ref


def test_tableref_str_quotes_only_when_needed() -> None:
    assert str(TableRef("public", "users")) == "public.users"
    assert str(TableRef("public", "Users")) == 'public."Users"'
    assert str(TableRef("a b", 'x"y')) == '"a b"."x""y"'


def test_tableref_ident_is_schema_qualified_and_quoted() -> None:
    ident = TableRef("public", "semi;colon").ident
    assert isinstance(ident, sql.Identifier)
    assert ident.as_string(None) == '"public"."semi;colon"'


def test_tableref_sorts_by_schema_then_name() -> None:
    refs = [TableRef("b", "a"), TableRef("a", "z"), TableRef("a", "b")]
    assert sorted(refs) == [TableRef("a", "b"), TableRef("a", "z"), TableRef("b", "a")]
