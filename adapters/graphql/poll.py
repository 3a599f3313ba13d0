"""``graphql_poll``: page through a GraphQL query's Relay connection on an interval; publish each
new node as an event.

One poll asks for pages (``after: <cursor>``) until ``pageInfo.hasNextPage`` is false, hands
each page's nodes to Kafka and awaits their acknowledgements before it saves the position in
Kafka, page by page: a restart resumes after the last page whose events Kafka holds, so each
node is published once (the event id is the node's hash, or ``emit.id``, so a node read again
after a crash keeps its id).

The position is the last ``endCursor`` (each poll reads on after it: a connection ordered by
creation), or with ``since`` a watermark and the ids seen at it, sent as a variable on each
poll's first page (a connection filtered by update time).

Answers: 429 and 503 wait as asked (Retry-After, capped by ``max_wait``); other 5xx, timeouts
and refused connections back off and retry, as does an answer whose errors are THROTTLED;
any other ``errors`` in an answer end the poll with the server's messages in the log and in
/readyz, and the next interval tries again. Nodes that cannot become events go to the
adapter's inbound dead-letter topic with the reason.
"""

from __future__ import annotations

__all__ = ["GraphQLPollInbound"]

import json
import time
from typing import Any, ClassVar
from urllib.parse import urlsplit

import httpx

from adapters.graphql.config import GraphQLPollConfig
from adapters.graphql.documents import error_codes, said
from adapters.http.bounded import AnswerTooLarge, AnswerTooSlow, answer_budget, read_bounded
from adapters.http.config import SendApiKey
from adapters.polling import Poller, Position, Walk, record_id, wait_seconds
from bus.adapter_api import Context, ExpressionError, KafkaUnavailable, RetryableError, compile_expression, http_client, parse_json
from bus.credentials.client_credentials import ClientCredentials, OAuth2ClientCredentials, via_httpx

_WAIT_STATUSES = {429, 503}
_RETRY_CODES = {"THROTTLED", "RATE_LIMITED", "SERVICE_UNAVAILABLE", "TIMEOUT"}


class _Page:
    def __init__(self, nodes: list[Any], more: bool, cursor: str | None) -> None:
        self.nodes, self.more, self.cursor = nodes, more, cursor


class GraphQLPollInbound(Poller[GraphQLPollConfig]):
    Config: ClassVar[type[GraphQLPollConfig]] = GraphQLPollConfig
    summary: ClassVar[str] = "Poll a GraphQL query over a Relay cursor connection; position kept in Kafka."
    kind: ClassVar[str] = "graphql_poll"

    position_filters: ClassVar[frozenset[str]] = frozenset({"variables"})

    @classmethod
    def position_of(cls, config: GraphQLPollConfig) -> dict[str, Any] | None:
        since = config.since.field if config.since else None
        # The fixed variables are a filter (see http_poll), but for the page size (Relay's first/last).
        variables = {k: v for k, v in sorted(config.variables.items()) if k not in ("first", "last", config.cursor_variable)}
        return {"path": urlsplit(config.url).path, "connection": config.connection, "variables": variables, "since": since}

    def __init__(self, config: GraphQLPollConfig, ctx: Context) -> None:
        super().__init__(config, ctx, id_of=config.since.id if config.since else None)
        self._path = config.connection_path
        self._since_of = compile_expression(config.since.field) if config.since else None
        oauth = config.auth if isinstance(config.auth, OAuth2ClientCredentials) else None
        self._oauth = ClientCredentials(oauth, what=f"graphql_poll {config.name}") if oauth else None
        self._client: httpx.AsyncClient | None = None
        self._cursor: str | None = None
        self._overlap = config.since.overlap.total_seconds() if config.since else 0.0
        self._position = Position(None, set(), None, overlap=self._overlap)

    async def open(self) -> None:
        assert self.ctx.checkpoints is not None
        saved = await self.ctx.checkpoints.load(self.config.name) or {}
        self._cursor = saved.get("cursor")
        initial = self.config.since.initial if self.config.since else None
        self._position = Position.load({**saved, "since": saved.get("since", initial), "etag": None}, overlap=self._overlap)
        if saved:
            self.ctx.logger.info("graphql_poll %s resumes at %s", self.config.name, self.where())
        headers = {k: v.get_secret_value() for k, v in self.config.headers.items()} | {"Accept": "application/json"}
        if isinstance(self.config.auth, SendApiKey):
            headers[self.config.auth.header] = self.config.auth.key.get_secret_value()
        self._client = http_client(timeout=self.config.timeout_s, headers=headers)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def where(self) -> str:
        return f"since={self._position.since!r}" if self.config.since else f"cursor={self._cursor!r}"

    # -- one poll ----------------------------------------------------------------------------
    async def poll(self) -> tuple[int, int]:
        """Every page from the position on; returns (nodes taken, pages read)."""
        since = self.config.since
        cursor = None if since else self._cursor
        position = self._position.copy()
        walk = Walk(position)
        ordered = self.saves_per_page(since is None or since.ordered)  # saved per page, so a restart resumes mid-backfill
        fixed = dict(self.config.variables)
        if since is not None:  # the watermark at the start of this poll, for all of its pages: the cursors are into that answer
            fixed[since.variable] = None if position.since in (None, "") else f"{since.prefix}{position.asked()}"
        taken = pages = 0
        asked = {cursor: 1}  # each cursor asked after in this poll -> its page: a server that sends us back is caught
        while not self.stopping:
            variables = {**fixed, self.config.cursor_variable: cursor}
            page = self._page(await self._post(variables))
            self.serving()
            pages += 1
            taken += await self._publish(page.nodes, walk)
            if page.cursor:
                cursor = page.cursor
            if ordered and walk.disorder:
                # Not in watermark order after all (a connection without its sortKey): a position saved
                # at a page's newest node could pass over older ones on the pages not read yet. Back to
                # where this walk began, which moves only when a walk reads to its end (at least once).
                ordered = False
                await self._save(cursor, walk.began)
            if ordered:
                await self._save(cursor, position)
            if not page.more or not page.cursor:
                if not ordered:
                    await self._save(cursor, position)  # read to the end: every node since the watermark was seen
                break
            if cursor in asked:  # hasNextPage with an endCursor already read after: the walk would never end
                raise RetryableError(
                    f"page {pages} has a next page after endCursor {cursor!r}, which page {asked[cursor]} was read after: "
                    "the server's cursors go round, and the poll would never end; stopped there"
                )
            asked[cursor] = pages + 1
        if since is not None:
            advice = f"sort the connection by {since.field!r} (Shopify: sortKey: UPDATED_AT)"
            self.notice("; ".join(filter(None, [self.found_unsorted(walk, since.ordered, advice=advice), self.crowded(position)])))
        return taken, pages

    def _page(self, answer: Any) -> _Page:
        connection = answer.get("data") if isinstance(answer, dict) else None
        for key in self._path:
            connection = connection.get(key) if isinstance(connection, dict) else None
        if not isinstance(connection, dict):
            raise RetryableError(f"the answer has no connection at data.{'.'.join(self._path)}: {json.dumps(answer)[:200]}")
        if isinstance(connection.get("edges"), list):
            nodes = [e.get("node") if isinstance(e, dict) else None for e in connection["edges"]]
        elif isinstance(connection.get("nodes"), list):
            nodes = list(connection["nodes"])
        else:
            raise RetryableError(f"data.{'.'.join(self._path)} has neither edges nor nodes: select edges {{ node {{ ... }} }}")
        info = connection.get("pageInfo")
        if not isinstance(info, dict) or "hasNextPage" not in info:
            raise RetryableError(f"data.{'.'.join(self._path)} has no pageInfo: select pageInfo {{ hasNextPage endCursor }}")
        cursor = info.get("endCursor")
        return _Page([n for n in nodes if n is not None], bool(info["hasNextPage"]), str(cursor) if cursor else None)

    async def _publish(self, nodes: list[Any], walk: Walk) -> int:
        documents: list[tuple[Any, bytes, str]] = []
        for node in nodes:
            digest = record_id(node)
            raw = json.dumps(node, default=str).encode()
            if self._since_of is not None:
                try:
                    value = self._since_of(node)
                except ExpressionError:
                    value = None
                if value is None:
                    await self.sink.reject(raw, f"node has no watermark value at {self._since_of.text!r}")
                    continue
                if not walk.take(value, self.ident(node, digest)):
                    continue
            documents.append((node, raw, f"{self.config.name}:{digest}"))
        return await self.publish(documents)

    def _dump(self, cursor: str | None, position: Position) -> dict[str, Any]:
        if self.config.since is None:
            return {"cursor": cursor}
        found = position.dump()
        del found["etag"]
        return found

    async def _save(self, cursor: str | None, position: Position) -> None:
        saved = self._dump(cursor, position)
        if saved == self._dump(self._cursor, self._position):
            return
        assert self.ctx.checkpoints is not None
        try:
            await self.ctx.checkpoints.save(self.config.name, saved)
        except KafkaUnavailable as exc:
            raise RetryableError(str(exc)) from exc
        self._cursor = cursor
        self._position = position.copy()

    # -- one request -------------------------------------------------------------------------
    async def _post(self, variables: dict[str, Any]) -> Any:
        assert self._client is not None
        delay = 1.0
        refreshed = False
        url = self.config.url
        for attempt in range(self.config.retries + 1):
            headers: dict[str, str] = {}
            if self._oauth is not None:
                headers |= await self._oauth.header(via_httpx(self._client))
            headers |= await self.connection_header()
            wait = delay
            try:
                document = {"query": self.config.query, "variables": variables}
                response = await read_bounded(
                    self._client, "POST", url, limit=self.config.max_page_bytes, within=answer_budget(self.config.timeout_s),
                    json=document, headers=headers,
                )  # fmt: skip
            except AnswerTooLarge as exc:  # a page too large now is as large at the next try: ask for smaller ones
                raise RetryableError(
                    f"{exc} (max_page_bytes): ask for smaller pages (the query's page size: first, limit) or raise the limit"
                ) from None
            except httpx.TimeoutException as exc:
                late = str(exc) if isinstance(exc, AnswerTooSlow) else f"timed out after {self.config.timeout_s:g}s"
                problem = f"POST {url}: {late}"
            except httpx.TransportError as exc:
                problem = f"POST {url} failed: {exc!r}"
            else:
                status = response.status_code
                if status == 401 and not refreshed and (self._oauth is not None or await self.connection_refused(headers)):
                    if self._oauth is not None:
                        self._oauth.invalidate()
                    refreshed = True
                    continue
                answer = self._json(response)
                errors = answer.get("errors") if isinstance(answer, dict) else None
                if status < 300 and not errors:
                    return answer
                listed = errors if isinstance(errors, list) else []
                problem = f"POST {url} answered {status}: {'; '.join(said(e) for e in listed[:5]) or response.text[:200]}"
                codes = error_codes(listed)
                if status in (401, 403):
                    raise RetryableError(f"credentials rejected: {problem}")
                if status in _WAIT_STATUSES or codes & _RETRY_CODES:
                    wait = wait_seconds(response.headers.get("Retry-After", ""), time.time()) or delay
                elif not (status >= 500 or status == 408):
                    raise RetryableError(problem)  # the server refuses the query: a config error, shown in /readyz
            if attempt == self.config.retries:
                raise RetryableError(f"{problem} (after {attempt + 1} attempts)")
            self.ctx.logger.info("graphql_poll %s: %s; waiting %.1fs", self.config.name, problem, wait)
            await self.sleep(min(wait, self.config.max_wait.total_seconds()))
            if self.stopping:
                raise RetryableError("stopping")
            delay = min(delay * 2, 60.0)
        raise AssertionError("unreachable")

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return parse_json(response.content, repeated_keys="last")  # nested at most 256 deep, as every document the hub reads
        except ValueError as exc:
            raise RetryableError(
                f"{response.request.url} answered {response.status_code} with a body that is not JSON: {response.text[:200]!r}"
            ) from exc
