"""``graphql``: run a mutation for each event, its variables built from the event.

The call is the ``http`` outbound's (auth, headers, timeouts, Idempotency-Key, CloudEvents
headers, statuses: 5xx and 429 retried, other 4xx dead-lettered). GraphQL adds what a 200 can
mean: an answer with ``errors`` is a failure. An error whose ``extensions.code`` is one of
``retry_codes`` (THROTTLED...) is retried; any other dead-letters the event with the server's
messages and paths, since the server refused this input and will refuse it again. A mutation's
user errors (``user_errors``, a list in its payload, as Shopify and Saleor answer) dead-letter
too. Other events go on: one refused input holds only its own key.
"""

from __future__ import annotations

__all__ = ["GraphQLOutbound"]

from typing import Any, ClassVar

from adapters.graphql.config import GraphQLOutboundConfig
from adapters.graphql.documents import error_codes, operation_of, said
from adapters.http.config import HttpOutboundConfig
from adapters.http.outbound import Answer, HttpOutbound
from bus.adapter_api import Body, Context, Event, ExpressionError, PermanentError, RetryableError, compile_expression, parse_json


class GraphQLOutbound(HttpOutbound):
    Config: ClassVar[type[HttpOutboundConfig]] = GraphQLOutboundConfig
    summary: ClassVar[str] = "Run a GraphQL mutation per event (variables from the event; errors in a 200 answer classified)."

    def __init__(self, config: GraphQLOutboundConfig, ctx: Context) -> None:
        super().__init__(config, ctx)
        operation = operation_of(config.query, "mutation")[1]
        self._name = operation.name.value if operation.name else None
        self._query = config.query
        self._variables = Body(config.variables) if config.variables is not None else None
        self._user_errors = compile_expression(config.user_errors) if config.user_errors else None
        self._retry_codes = frozenset(config.retry_codes)

    def render(self, event: Event) -> dict[str, Any]:
        request: dict[str, Any] = {"query": self._query, "variables": self._variables.render(event) if self._variables else {}}
        if self._name:
            request["operationName"] = self._name
        return request

    def check_answer(self, method: str, url: str, response: Answer) -> None:
        try:
            answer = parse_json(response.text, repeated_keys="last")  # nested at most 256 deep: a deeper answer is no GraphQL answer
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or not ("data" in answer or "errors" in answer):
            # A proxy's page or a maintenance answer, not the GraphQL server's: it may answer later.
            raise RetryableError(f"{method} {url} answered {response.status_code} with no GraphQL answer: {response.text[:200]!r}")
        errors = answer.get("errors")
        if errors:
            listed = errors if isinstance(errors, list) else [errors]
            text = "; ".join(said(e) for e in listed[:5]) + (f" (and {len(listed) - 5} more)" if len(listed) > 5 else "")
            if error_codes(listed) & self._retry_codes:
                raise RetryableError(f"{url} answered GraphQL errors worth retrying: {text}")
            raise PermanentError(f"{url} refused the mutation: {text}")
        if self._user_errors is not None:
            try:
                found = self._user_errors(answer.get("data") or {})
            except ExpressionError:
                found = None
            if found:
                listed = found if isinstance(found, list) else [found]
                raise PermanentError(f"{url} answered user errors: {'; '.join(said(e) for e in listed[:5])}")
        super().check_answer(method, url, response)  # refused_when and retry_when, if set
