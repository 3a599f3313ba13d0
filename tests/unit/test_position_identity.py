"""What a poller's saved position is a position in (``Inbound.position_of``): the filter is part
of it (a watermark taken among open records passes over every closed one before it), the pages'
and the watermark's own parameters are not, and a position saved by an earlier version that said
less is still taken (bus.runtime.checkpoints.same_source)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from adapters.graphql.config import GraphQLPollConfig
from adapters.graphql.poll import GraphQLPollInbound
from adapters.http.config import HttpPollConfig
from adapters.http.poll import HttpPollInbound
from adapters.sql.config import SqlPollConfig
from adapters.sql.poll import SqlPollInbound
from bus.runtime.checkpoints import as_saved, same_source

EMIT = {"schema": "Customer", "key": "id", "map": {"customer_id": "id", "name": "name", "email": "email"}}


def http_poll(url: str, **extra: Any) -> dict[str, Any] | None:
    config = HttpPollConfig.model_validate(
        {"name": "crm", "url": url, "since": {"param": "updated_since", "field": "updated_at"}, "emit": EMIT, **extra}
    )
    return as_saved(HttpPollInbound.position_of(config))


def test_an_http_polls_fixed_query_is_its_filter_and_its_paging_is_not() -> None:
    paged = {"pagination": {"type": "page", "size_param": "per_page", "size": 50}}
    base = http_poll("https://crm.example.com/api/leads?status=open&per_page=20", params={"region": "eu"}, **paged)
    assert base is not None and base["query"] == {"region": "eu", "status": "open"}, base
    # The page size, the page, the watermark's parameter and the host: the same source.
    assert same_source(base, http_poll("https://crm.example.com/api/leads?status=open&page=3", params={"region": "eu"}, **paged))
    reordered = "https://crm.example.com/api/leads?region=eu&updated_since=2020"
    assert same_source(base, http_poll(reordered, params={"status": "open"}, **paged))
    assert same_source(base, http_poll("https://eu.crm.example.com/api/leads?status=open", params={"region": "eu"}, **paged))
    # Another value, a filter dropped, one added: other records, read from the start.
    assert not same_source(base, http_poll("https://crm.example.com/api/leads?status=closed", params={"region": "eu"}, **paged))
    assert not same_source(base, http_poll("https://crm.example.com/api/leads", params={"region": "eu"}, **paged))
    assert not same_source(base, http_poll("https://crm.example.com/api/leads?status=open&archived=1", params={"region": "eu"}, **paged))


def test_a_graphql_polls_variables_are_its_filter_but_for_the_page_size() -> None:
    def identity(variables: dict[str, Any]) -> dict[str, Any] | None:
        config = GraphQLPollConfig.model_validate(
            {
                "name": "shop",
                "url": "https://shop.example.com/graphql",
                "query": "query($first: Int, $after: String, $status: String) { orders(first: $first, after: $after, status: $status) "
                "{ edges { node { id } } pageInfo { hasNextPage endCursor } } }",
                "variables": variables,
                "emit": EMIT,
            }
        )
        return as_saved(GraphQLPollInbound.position_of(config))

    assert same_source(identity({"first": 50, "status": "OPEN"}), identity({"first": 250, "status": "OPEN"}))
    assert not same_source(identity({"first": 50, "status": "OPEN"}), identity({"first": 50, "status": "CLOSED"}))


def test_an_sql_polls_where_narrows_when_added_and_is_another_source_when_changed() -> None:
    def identity(where: str | None) -> dict[str, Any] | None:
        watermark = {"column": "u", "id": "id"}
        config = SqlPollConfig.model_validate(
            {"name": "legacy", "dsn": "postgresql://u@h/db", "table": "t", "watermark": watermark, "where": where, "emit": EMIT}
        )
        return as_saved(SqlPollInbound.position_of(config))

    assert identity(None) == {"table": "t", "column": "u", "id": "id"}, "no where: what it always was"
    assert same_source(identity(None), identity("deleted = false")), "a filter added only narrows what is read"
    assert same_source(identity("deleted  =\n false"), identity("deleted = false")), "laid out anew: the same"
    assert not same_source(identity("deleted = false"), identity(None)), "dropped: rows it kept out come in"
    assert not same_source(identity("deleted = false"), identity("region = 'eu'"))


@pytest.mark.parametrize(
    ("saved", "now", "same"),
    [
        ({"path": "/a", "since": "u"}, {"path": "/a", "since": "u", "query": {}}, True),  # saved before the query was said
        ({"path": "/a", "since": "u"}, {"path": "/b", "since": "u", "query": {}}, False),
        ({"path": "/a", "since": "u", "old": 1}, {"path": "/a", "since": "u", "query": {}}, False),  # says what now does not
        ({"path": "/a"}, {"path": "/a"}, True),
        (None, {"path": "/a"}, False),
        ("/a", {"path": "/a"}, False),
    ],
)
def test_same_source(saved: Any, now: dict[str, Any], same: bool) -> None:
    assert same_source(saved, now) is same


def test_a_yaml_date_in_a_filter_compares_as_it_comes_back() -> None:
    now = {"params": {"from": dt.date(2024, 1, 31)}}
    assert as_saved(now) == {"params": {"from": "2024-01-31"}}
    assert same_source(as_saved(now), as_saved(now))
