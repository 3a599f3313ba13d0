"""Config models of the GraphQL family, and what ``bus validate`` checks of them against the
server's schema (their ``contract``)."""

from __future__ import annotations

__all__ = ["GraphQLOutboundConfig", "GraphQLPollConfig", "GraphQLSince"]

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from graphql import GraphQLSchema
from pydantic import Field, SecretStr, field_validator, model_validator

from adapters.graphql.documents import (
    SchemaError,
    introspect,
    load_schema,
    operation_of,
    selection_json_schema,
    validation_errors,
    variables_json_schema,
)
from adapters.http.config import HttpOutboundConfig, OAuth2Connection, SendApiKey
from bus.adapter_api import AdapterConfig, BodyMap, ConfigModel, Contract, Duration, EmitSpec, Expression, compile_expression, duration
from bus.credentials.client_credentials import OAuth2ClientCredentials

_SCHEMA_HELP = (
    "The server's schema, for `bus validate`: a file of SDL (.graphql) or an introspection result (.json), relative to "
    "the config file; or `introspect` to ask the server itself (its URL, with the config's headers and API key). With it "
    "the document is checked as the server would check it, and what it sends or reads against the types the schema declares."
)


def _schema(given: str, base_dir: Path, url: str, headers: dict[str, str]) -> GraphQLSchema:
    if given == "introspect":
        return introspect(url, headers)
    return load_schema(_schema_path(base_dir, given))


def _checked(config: Any, base_dir: Path, kind: str) -> tuple[GraphQLSchema, Any, Any] | Contract:
    """The schema, document and operation of a config that names a schema; a Contract with the
    errors when the schema cannot be had or the server would refuse the document."""
    try:
        schema = _schema(config.schema_, base_dir, config.url, _auth_headers(config.headers, config.auth))
    except SchemaError as exc:
        return Contract(errors=((("schema",), str(exc)),))
    document, operation = operation_of(config.query, kind)
    errors = validation_errors(schema, document)
    if errors:
        return Contract(errors=tuple((("query",), f"the server would refuse the {kind}: {e}") for e in errors))
    return schema, document, operation


def _auth_headers(headers: Mapping[str, Any], auth: Any) -> dict[str, str]:
    """Constant headers and an API key, for an introspection call at validate time."""
    found = {k: v.get_secret_value() for k, v in headers.items() if "${" not in v.get_secret_value()}
    if isinstance(auth, SendApiKey):
        found[auth.header] = auth.key.get_secret_value()
    return found


# GraphQL has no status codes for errors inside a 200 answer; these extension codes say "later".
_RETRY_CODES = ["THROTTLED", "RATE_LIMITED", "SERVICE_UNAVAILABLE", "TIMEOUT"]


def _document(text: str, kind: str) -> str:
    try:
        operation_of(text, kind)
    except SchemaError as exc:
        raise ValueError(str(exc)) from None
    return text


def _schema_path(base_dir: Path, given: str) -> Path:
    return Path(given) if Path(given).is_absolute() else base_dir / given


class GraphQLOutboundConfig(HttpOutboundConfig):
    """Run a GraphQL mutation for each event, its variables built from the event."""

    type: Literal["graphql"] = "graphql"  # type: ignore[assignment]
    method: Literal["POST"] = Field(default="POST", description="Always POST (GraphQL over HTTP).")
    query: str = Field(
        description="The mutation document, with its variables declared ($name: Type!).",
        examples=["mutation Create($input: InvoiceInput!) { createInvoice(input: $input) { invoice { id } userErrors { message } } }"],
    )
    variables: BodyMap = Field(
        default=None,
        description="Variable -> expression over the event, or a nested block (an input object); `$each` for lists. "
        "Checked against the variables the mutation declares, and with `schema` against their input types.",
        examples=[{"input": {"number": "invoice_id", "amount": "amount", "customer": "customer_id"}}],
    )
    user_errors: str | None = Field(
        default=None,
        description="Expression over the answer's `data` giving the mutation's user errors (Shopify, Saleor: "
        "`createInvoice.userErrors`); a non-empty list dead-letters the event with their messages.",
        examples=["createInvoice.userErrors"],
    )
    retry_codes: list[str] = Field(
        default_factory=_RETRY_CODES.copy,
        description="`errors[].extensions.code` values that mean try again later; any other error in the answer dead-letters "
        "the event (the server refused this input).",
    )
    schema_: str | None = Field(default=None, alias="schema", description=_SCHEMA_HELP, examples=["graphql/ledger.graphql"])

    @field_validator("query")
    @classmethod
    def _mutation(cls, text: str) -> str:
        return _document(text, "mutation")

    @field_validator("user_errors")
    @classmethod
    def _expression(cls, text: str | None) -> str | None:
        if text is not None:
            compile_expression(text)
        return text

    @model_validator(mode="after")
    def _no_rest_body(self) -> GraphQLOutboundConfig:
        if self.body is not None:
            raise ValueError("a graphql outbound sends {query, variables}: map the event in `variables`, not `body`")
        if self.method_when:
            raise ValueError("a graphql outbound always POSTs: method_when has no meaning here")
        if self.openapi is not None:
            raise ValueError("a graphql outbound is checked against the server's GraphQL schema (`schema`), not an OpenAPI document")
        declared = {d.variable.name.value for d in operation_of(self.query, "mutation")[1].variable_definitions or ()}
        given = set(self.variables or {})
        if given - declared:
            raise ValueError(f"variables {sorted(given - declared)} are not declared by the mutation (it declares {sorted(declared)})")
        return self

    def contract(self, base_dir: Path) -> Contract:
        if self.schema_ is None:
            return Contract()
        checked = _checked(self, base_dir, "mutation")
        if isinstance(checked, Contract):
            return checked
        schema, _, operation = checked
        name = operation.name.value if operation.name else "the mutation"
        accepts = variables_json_schema(schema, operation, f"the variables of {name}")
        if self.variables is None and accepts["required"]:
            return Contract(errors=((("variables",), f"{name} needs variables {accepts['required']}, and none are mapped"),))
        return Contract(body=(("variables",), accepts))


class GraphQLSince(ConfigModel):
    """Incremental polling by a watermark: each poll starts from the first page, asking for records
    changed since the last one seen (GitHub's `since`, Shopify's `query: "updated_at:>..."`)."""

    variable: str = Field(description="The query's variable that carries the watermark.", examples=["since"])
    field: Expression = Field(description="Expression over a record giving its watermark value.", examples=["updatedAt"])
    id: Expression | None = Field(
        default=None, description="A record's id, to tell apart records that share a watermark. Default: a hash of the record."
    )
    initial: str | None = Field(default=None, description="Watermark of the very first poll; none sends null.")
    prefix: str = Field(default="", description="Text before the watermark (Shopify: `updated_at:>`).")
    overlap: Duration = Field(
        default=duration("0s"),
        description="Ask again from this much before the watermark at every poll (a time, or epoch seconds or milliseconds): "
        "for APIs that make a record visible after records changed later (a search index that lags). A record in that window "
        "not read before is published; one read before is not (remembered in the position, the newest 5,000).",
        examples=["5m"],
    )
    ordered: bool = Field(
        default=True,
        description="The connection returns nodes in ascending watermark order (Shopify: `sortKey: UPDATED_AT`), so the "
        "position is saved after every page (a restart resumes mid-backfill). false: saved only after the last page of a "
        "poll. Nodes found out of order are never dropped: the poll then saves only at its end, and says so.",
    )


class GraphQLPollConfig(AdapterConfig):
    """Poll a GraphQL query over a Relay cursor connection and publish each new node as an event.
    The position (the end cursor, or with `since` a watermark) is kept in Kafka after the events
    before it were acknowledged, so a restart resumes where it stopped."""

    type: Literal["graphql_poll"] = "graphql_poll"
    url: str = Field(
        pattern=r"^https?://", description="The GraphQL endpoint.", examples=["https://shop.example.com/admin/api/graphql.json"]
    )
    query: str = Field(
        description="The query document. It declares the cursor variable (`$after: String`) and selects a connection with "
        "`pageInfo { hasNextPage endCursor }` and `edges { node { ... } }` (or `nodes { ... }`).",
        examples=["query Orders($after: String) { orders(first: 50, after: $after) { edges { node { id total } } "
                  "pageInfo { hasNextPage endCursor } } }"],
    )  # fmt: skip
    variables: dict[str, Any] = Field(default_factory=dict, description="Fixed variables sent with every page.", examples=[{"first": 50}])
    connection: str | None = Field(
        default=None,
        description="Dotted path under `data` to the connection (response keys: aliases count). Default: the query's one top-level field.",
        examples=["orders", "viewer.repositories"],
    )
    cursor_variable: str = Field(default="after", description="The variable that carries the cursor.")
    since: GraphQLSince | None = Field(
        default=None,
        description="Without it the end cursor is the position: each poll reads on after the last node seen (a connection "
        "ordered by creation). With it each poll walks from the first page, asking for what changed since the watermark.",
    )
    interval: Duration = Field(default=duration("30s"), description="Time between the end of one poll and the start of the next.")
    headers: dict[str, SecretStr] = Field(default_factory=dict, description="Extra request headers (values may hold secrets).")
    auth: SendApiKey | OAuth2ClientCredentials | OAuth2Connection | None = Field(
        default=None,
        discriminator="type",
        description="api_key, oauth2 (client credentials), or oauth2_connection (one of the hub's `connections`).",
    )
    timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="Per-call timeout: to connect, and for each wait for the answer's next bytes; the whole answer must "
        "also end within six times this (at least 60 s). A timeout is retried.",
    )
    max_page_bytes: int = Field(
        default=16 * 1024 * 1024,
        ge=1024,
        description="An answer larger than this (decoded) is refused, not read: an API that ignores the page size asked for "
        "would otherwise answer with every record it has and take the hub's memory. Ask for smaller pages first.",
    )
    retries: int = Field(
        default=5,
        ge=0,
        description="Retries of one page on 429, 5xx, timeouts and THROTTLED errors; then the next interval tries again.",
    )
    max_wait: Duration = Field(default=duration("5m"), description="Longest wait the hub accepts from a rate-limit answer (Retry-After).")
    schema_: str | None = Field(default=None, alias="schema", description=_SCHEMA_HELP, examples=["graphql/shop.json"])
    emit: EmitSpec = Field(description="How one node becomes a canonical event. Without `id`, the id is a hash of the node.")

    @field_validator("query")
    @classmethod
    def _query(cls, text: str) -> str:
        return _document(text, "query")

    @model_validator(mode="after")
    def _declares_its_variables(self) -> GraphQLPollConfig:
        operation = operation_of(self.query, "query")[1]
        declared = {d.variable.name.value for d in operation.variable_definitions or ()}
        wanted = [self.cursor_variable, *([self.since.variable] if self.since else [])]
        missing = [v for v in wanted if v not in declared]
        if missing:
            raise ValueError(f"the query does not declare ${', $'.join(missing)} (it declares {sorted(declared) or 'nothing'})")
        if self.connection is None and len(operation.selection_set.selections) != 1:
            raise ValueError("the query selects several top-level fields: name the one to page through in `connection`")
        return self

    @property
    def connection_path(self) -> list[str]:
        if self.connection is not None:
            return self.connection.split(".")
        field = operation_of(self.query, "query")[1].selection_set.selections[0]
        alias = getattr(field, "alias", None)
        return [alias.value if alias else field.name.value]  # type: ignore[attr-defined]

    def contract(self, base_dir: Path) -> Contract:
        if self.schema_ is None:
            return Contract()
        checked = _checked(self, base_dir, "query")
        if isinstance(checked, Contract):
            return checked
        schema, document, operation = checked
        node = selection_json_schema(schema, document, operation, self.connection_path)
        if node is None:
            where = ".".join(self.connection_path)
            return Contract(errors=((("connection",), f"{where} is not a connection the query selects edges {{ node }} or nodes of"),))
        return Contract(payload=node)
