"""``http_poll``: read a REST collection on an interval; publish each new record as an event.

One poll walks every page (page number, offset, cursor or Link header), hands each record to Kafka
and awaits the acknowledgements page by page. The position is a watermark (the largest ``since``
value seen) plus the ids of the records that carry exactly that value: the next poll asks the API
for records changed since the watermark (inclusive, as APIs answer) and skips the ones already
seen, so records that share a timestamp are neither lost nor published twice. The position is
saved in Kafka after the events before it were acknowledged; a restart resumes there.

Answers: 304 (with ETag) is "nothing changed". 429 and 503 wait as the API asks (Retry-After,
X-RateLimit-Reset, capped by ``max_wait``); other 5xx, timeouts and refused connections back
off and retry; a 401 with OAuth2 fetches a new token once; any other answer ends the poll with
the reason in the log and in /readyz, and the next interval tries again. Records that cannot
become events are kept on the adapter's inbound dead-letter topic.
"""

from __future__ import annotations

__all__ = ["HttpPollInbound"]

import json
import time
from typing import Any, ClassVar
from urllib.parse import parse_qsl, urlsplit

import httpx

from adapters.http.bounded import AnswerTooLarge, AnswerTooSlow, answer_budget, read_bounded
from adapters.http.config import HttpPollConfig, SendApiKey
from adapters.polling import Poller, Position, Walk, record_id, wait_seconds
from bus.adapter_api import (
    Context,
    ExpressionError,
    KafkaUnavailable,
    RetryableError,
    compile_expression,
    http_client,
    parse_json,
)
from bus.credentials.client_credentials import ClientCredentials, OAuth2ClientCredentials, via_httpx

_WAIT_STATUSES = {429, 503}
_DEFAULT_PARAM = {"page": "page", "offset": "offset", "cursor": "cursor"}


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    """Scheme, host and port: https on 443 and on no port given are the same origin."""
    port = url.port or {"http": 80, "https": 443}.get(url.scheme)
    return url.scheme, url.host, port


class HttpPollInbound(Poller[HttpPollConfig]):
    Config: ClassVar[type[HttpPollConfig]] = HttpPollConfig
    summary: ClassVar[str] = "Poll a REST API (pagination, ETag, OAuth2, rate limits); position kept in Kafka."
    kind: ClassVar[str] = "http_poll"

    position_filters: ClassVar[frozenset[str]] = frozenset({"query"})

    @classmethod
    def position_of(cls, config: HttpPollConfig) -> dict[str, Any] | None:
        # The path, not the host: an API moved to another host is the same source. The fixed query
        # (the URL's and `params`) is a filter (?status=open): a watermark taken among open records
        # would pass over every closed one before it. The pages' and the watermark's own are not.
        moving = {config.since.param, config.pagination.param or _DEFAULT_PARAM.get(config.pagination.type), config.pagination.size_param}
        url = urlsplit(config.url)
        query = {k: v for k, v in [*parse_qsl(url.query, keep_blank_values=True), *config.params.items()] if k not in moving}
        return {"path": url.path, "query": dict(sorted(query.items())), "records": config.records, "since": config.since.field}

    def __init__(self, config: HttpPollConfig, ctx: Context) -> None:
        super().__init__(config, ctx, id_of=config.since.id)
        self._records = compile_expression(config.records) if config.records else None
        self._since_of = compile_expression(config.since.field)
        self._next = compile_expression(config.pagination.next) if config.pagination.next else None
        self._max_wait = config.max_wait.total_seconds()
        self._oauth = (
            ClientCredentials(config.auth, what=f"http_poll {config.name}") if isinstance(config.auth, OAuth2ClientCredentials) else None
        )
        self._client: httpx.AsyncClient | None = None
        self._overlap = config.since.overlap.total_seconds()
        self._position = Position(None, set(), None, overlap=self._overlap)

    async def open(self) -> None:
        assert self.ctx.checkpoints is not None
        saved = await self.ctx.checkpoints.load(self.config.name)
        if saved is not None:
            self._position = Position.load(saved, overlap=self._overlap)
            self.ctx.logger.info("http_poll %s resumes at %s", self.config.name, self.where())
        else:
            self._position = Position(self.config.since.initial or None, set(), None, overlap=self._overlap)
        headers = {k: v.get_secret_value() for k, v in self.config.headers.items()} | {"Accept": "application/json"}
        if isinstance(self.config.auth, SendApiKey):
            headers[self.config.auth.header] = self.config.auth.key.get_secret_value()
        # Every request carries the poll's credentials: none goes outside the API's own origin (and
        # the token endpoint's), whether a redirect or a next-page link sends it there.
        allowed = {_origin(httpx.URL(self.config.url))}
        if self._oauth is not None:
            allowed.add(_origin(httpx.URL(self._oauth.config.token_url)))

        async def inside(request: httpx.Request) -> None:
            if _origin(request.url) not in allowed:
                raise RetryableError(
                    f"{request.method} {request.url} is outside {self.config.url}'s origin (a redirect or a next-page link "
                    "points there): not followed, the poll's credentials would go with it"
                )

        self._client = http_client(timeout=self.config.timeout_s, headers=headers, follow_redirects=True, event_hooks={"request": [inside]})

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    def where(self) -> str:
        return f"{self.config.since.param}={self._position.since!r}"

    # -- one poll ----------------------------------------------------------------------------
    async def poll(self) -> tuple[int, int]:
        """Walk every page; returns (records taken, pages read)."""
        pagination = self.config.pagination
        param = pagination.param or _DEFAULT_PARAM.get(pagination.type, "")
        params: dict[str, Any] = dict(self.config.params)
        if self._position.since not in (None, ""):
            since = self.config.since
            params[since.param] = f"{since.prefix}{self._position.asked()}{since.suffix}"
        if pagination.size_param:
            params[pagination.size_param] = pagination.size
        if pagination.type == "page":
            params[param] = pagination.start
        elif pagination.type == "offset":
            params[param] = 0
        url: str | None = self.config.url
        position = self._position.copy()
        walk = Walk(position)
        ordered = self.saves_per_page(self.config.since.ordered)  # saved per page, so a restart resumes mid-backfill
        taken = pages = 0
        asked: dict[str, int] = {}  # each page asked for in this poll -> its number: an API that sends us back is caught
        last_records = notice = ""
        while url is not None and pages < pagination.max_pages and not self.stopping:
            etag = position.etag if pages == 0 and self.config.etag else None
            sent = params if pagination.type != "link" or pages == 0 else None
            request = f"{url} {sorted((sent or {}).items())}"
            if request in asked:  # (an ordered position is saved per page: what was taken stays taken)
                raise RetryableError(
                    f"page {pages + 1} would ask for page {asked[request]} again ({self._describe(url, sent)}): the API's next "
                    "page points back, and the poll would go round without end; stopped there"
                )
            asked[request] = pages + 1
            response = await self._get(url, sent, etag)
            if response.status_code == 304:
                return taken, pages
            if pages == 0 and self.config.etag:
                position.etag = response.headers.get("ETag")
            body = self._json(response)
            records = self._records_of(body)
            self.serving()
            pages += 1
            taken += await self._publish(records, walk)
            if ordered and walk.disorder:
                # Not in watermark order after all: a position saved at a page's newest record could
                # pass over older ones on the pages not read yet. Back to where this walk began, which
                # moves only when a walk reads to its end (a walk cut short is read again: at least once).
                ordered = False
                await self._save(walk.began)
            if ordered:
                await self._save(position)
            digest = record_id(records) if records else ""
            if digest and digest == last_records:
                # Some APIs answer a page past the end with the last page again; one that ignores the
                # page parameter answers every page with the first. Either way the walk ends here.
                notice = (
                    f"page {pages} holds the same {len(records)} record(s) as page {pages - 1} ({self._describe(url, sent)}): "
                    f"taken as the last page (if the API does not page by {param!r}, the records after the first page are never read)"
                )
                url = None  # the walk is done
                break
            last_records = digest
            url = self._next_url(url, params, param=param, response=response, body=body, records=records)
        unsorted = self.found_unsorted(walk, self.config.since.ordered, advice=f"ask the API to sort by {self.config.since.field!r}")
        notice = "; ".join(filter(None, [notice, unsorted]))
        if url is not None and not ordered:
            # A walk cut short (max_pages, a stop) of an API that does not sort by the watermark: the
            # pages not read may hold records older than the newest taken, which a position moved to
            # it would never ask for again. Kept where it was: the next poll walks again from it.
            if not self.stopping:
                notice = "; ".join(filter(None, [notice, (
                    f"a poll stopped after max_pages ({pagination.max_pages:,}) pages; since the API's pages are not in "
                    "watermark order, the position stays where it was and the next poll walks "
                    "them again: raise max_pages, or ask the API for sorted pages"
                )]))  # fmt: skip
            self.notice(notice)
            return taken, pages
        if url is not None and pages >= pagination.max_pages and not self.stopping:
            notice = f"a poll stopped after max_pages ({pagination.max_pages:,}) pages; the next goes on from its position"
        await self._save(position)
        self.notice("; ".join(filter(None, [notice, self.crowded(position)])))
        return taken, pages

    @staticmethod
    def _describe(url: str, params: dict[str, Any] | None) -> str:
        return url + ("?" + "&".join(f"{k}={v}" for k, v in params.items()) if params else "")

    def _json(self, response: httpx.Response) -> Any:
        # An answer in another charset than UTF-8 that says so (a legacy API's ISO-8859-1) is
        # decoded as it says; it failed as "not JSON" at every poll.
        declared = (response.charset_encoding or "").lower()
        body = response.text if declared and declared not in ("utf-8", "utf8", "us-ascii", "ascii") else response.content
        try:
            return parse_json(body, repeated_keys="last")  # nested at most 256 deep, as every document the hub reads
        except ValueError as exc:
            raise RetryableError(
                f"{response.request.url} answered {response.status_code} with a body that is not JSON: {response.text[:200]!r}"
            ) from exc

    def _records_of(self, body: Any) -> list[Any]:
        try:
            records = self._records(body) if self._records else body
        except ExpressionError as exc:
            raise RetryableError(f"records: {exc}") from exc
        if records is None:
            return []
        if not isinstance(records, list):
            raise RetryableError(f"expected a list of records at {self.config.records or 'the top level'}, got {type(records).__name__}")
        return records

    def _next_url(
        self, url: str, params: dict[str, Any], *, param: str, response: httpx.Response, body: Any, records: list[Any]
    ) -> str | None:
        kind = self.config.pagination.type
        if kind == "none":
            return None
        if kind == "link":
            if self._next is not None:  # the next page's URL in the body (FHIR, HAL)
                try:
                    target = self._next(body)
                except ExpressionError:
                    target = None
                return str(response.url.join(str(target))) if target else None
            link = response.links.get("next")
            return str(response.url.join(link["url"])) if link and link.get("url") else None
        if kind == "cursor":
            assert self._next is not None
            try:
                cursor = self._next(body)
            except ExpressionError:
                cursor = None
            if cursor in (None, "", False):
                return None
            params[param] = cursor
            return url
        if len(records) < self.config.pagination.size or not records:
            return None  # page and offset: a short page is the last one
        params[param] += 1 if kind == "page" else len(records)
        return url

    async def _publish(self, records: list[Any], walk: Walk) -> int:
        documents: list[tuple[Any, bytes, str]] = []
        for record in records:
            digest = record_id(record)
            try:
                value = self._since_of(record)
            except ExpressionError:
                value = None
            raw = json.dumps(record, default=str).encode()
            if value is None:
                await self.sink.reject(raw, f"record has no watermark value at {self.config.since.field!r}")
                continue
            if walk.take(value, self.ident(record, digest)):
                documents.append((record, raw, f"{self.config.name}:{digest}"))
        return await self.publish(documents)

    async def _save(self, position: Position) -> None:
        if position.dump() == self._position.dump():
            return
        assert self.ctx.checkpoints is not None
        try:
            await self.ctx.checkpoints.save(self.config.name, position.dump())
        except KafkaUnavailable as exc:
            raise RetryableError(str(exc)) from exc
        self._position = position.copy()

    # -- one request -------------------------------------------------------------------------
    async def _get(self, url: str, params: dict[str, Any] | None, etag: str | None) -> httpx.Response:
        assert self._client is not None
        delay = 1.0
        refreshed = False
        for attempt in range(self.config.retries + 1):
            headers = {"If-None-Match": etag} if etag else {}
            if self._oauth is not None:
                headers |= await self._oauth.header(via_httpx(self._client))
            headers |= await self.connection_header()
            try:
                response = await read_bounded(
                    self._client, "GET", url, limit=self.config.max_page_bytes, within=answer_budget(self.config.timeout_s),
                    params=params, headers=headers,
                )  # fmt: skip
            except AnswerTooLarge as exc:  # a page too large now is as large at the next try: ask for smaller ones
                raise RetryableError(f"{exc} (max_page_bytes): ask for smaller pages (pagination.size) or raise the limit") from None
            except httpx.TimeoutException as exc:
                problem = f"GET {url}: {exc}" if isinstance(exc, AnswerTooSlow) else f"GET {url} timed out after {self.config.timeout_s:g}s"
                wait = delay
            except httpx.TransportError as exc:
                problem, wait = f"GET {url} failed: {exc!r}", delay
            else:
                status = response.status_code
                if status < 300 or status == 304:
                    await self._respect_quota(response)
                    return response
                if status == 401 and not refreshed and (self._oauth is not None or await self.connection_refused(headers)):
                    if self._oauth is not None:
                        self._oauth.invalidate()  # revoked or rotated: one retry with a fresh token
                    refreshed = True
                    continue
                problem = f"GET {response.request.url} answered {status}: {response.text[:200]}"
                if status in (401, 403):
                    raise RetryableError(f"credentials rejected: {problem}")
                if status in _WAIT_STATUSES:
                    wait = self._asked_wait(response) or delay
                elif status >= 500 or status == 408:
                    wait = delay
                else:
                    raise RetryableError(problem)  # 400, 404...: a config error; retrying now would not help
            if attempt == self.config.retries:
                raise RetryableError(f"{problem} (after {attempt + 1} attempts)")
            self.ctx.logger.info("http_poll %s: %s; waiting %.1fs", self.config.name, problem, wait)
            await self.sleep(min(wait, self._max_wait))
            if self.stopping:
                raise RetryableError("stopping")
            delay = min(delay * 2, 60.0)
        raise AssertionError("unreachable")

    def _asked_wait(self, response: httpx.Response) -> float | None:
        now = time.time()
        for header in ("Retry-After", "X-RateLimit-Reset", "RateLimit-Reset"):
            seconds = wait_seconds(response.headers.get(header, ""), now)
            if seconds is not None:
                return max(0.0, seconds)
        return None

    async def _respect_quota(self, response: httpx.Response) -> None:
        """A success that says the quota is spent (X-RateLimit-Remaining: 0): wait for the reset
        before the next request instead of spending a request on a 429."""
        remaining = response.headers.get("X-RateLimit-Remaining") or response.headers.get("RateLimit-Remaining")
        if remaining is not None and remaining.strip() == "0":
            wait = self._asked_wait(response)
            if wait:
                self.ctx.logger.info("http_poll %s: rate-limit quota spent; waiting %.1fs for the reset", self.config.name, wait)
                await self.sleep(min(wait, self._max_wait))
