"""The management API's OpenAPI 3.1 document, generated from its pydantic models."""

from __future__ import annotations

__all__ = ["openapi_document"]

from typing import Any

from pydantic import BaseModel, TypeAdapter
from pydantic.json_schema import models_json_schema

from ops.api.models import (
    BackfillDone,
    BackfillRequest,
    DeadLetterAction,
    DeadLetterDone,
    DeadLetterPage,
    EventLineage,
    EventSearch,
    InboundPauseState,
    MigrationRuns,
    PauseRequest,
    PauseState,
    PositionChange,
    PositionChanged,
    PositionState,
    Problem,
    ReconcileBalance,
    RedeliveryDone,
    RedeliveryRequest,
    SubscriberDetail,
    SubscriberNode,
    Topology,
    ValidationReport,
)

_REF = "#/components/schemas/{model}"
_COPIES_BUSY = "A redelivery or backfill to the subscriber is under way in this hub process: ask again once it is done."
_PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}
_ERRORS = {
    "401": {"description": "No token, or an unknown one.", "content": _PROBLEM},
    "403": {"description": "The token may not do this.", "content": _PROBLEM},
    "500": {"description": "The hub failed to answer.", "content": _PROBLEM},
    "503": {"description": "The hub's Kafka did not answer: try again (Retry-After).", "content": _PROBLEM},
}


def _ok(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"200": {"description": description, "content": {"application/json": {"schema": schema}}}, **_ERRORS}


def _ref(model: type[BaseModel]) -> dict[str, str]:
    return {"$ref": _REF.format(model=model.__name__)}


def _pause(action: str, summary: str, *, inbound: bool = False) -> dict[str, Any]:
    answer = InboundPauseState if inbound else PauseState
    return {
        "post": {
            "operationId": f"{action}{'Inbound' if inbound else 'Subscriber'}",
            "summary": summary + " Needs a write token; the token's name is recorded as who asked.",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"required": False, "content": {"application/json": {"schema": _ref(PauseRequest)}}},
            "responses": {
                "202": {"description": "Asked.", "content": {"application/json": {"schema": _ref(answer)}}},
                "400": {"description": "A body that is not a reason, said why.", "content": _PROBLEM},
                "404": {"description": f"No such {'inbound adapter' if inbound else 'subscriber'}.", "content": _PROBLEM},
                **_ERRORS,
            },
        }
    }


def _position(action: str, summary: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": f"{action}InboundPosition",
            "summary": summary + " Only while the inbound is paused (POST /inbound/{name}/pause), so no reader saves over it. "
            "Needs a write token.",
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"required": False, "content": {"application/json": {"schema": _ref(PositionChange)}}},
            "responses": {
                **_ok(_ref(PositionChanged), "What was done (or that there was nothing to do), and the position before."),
                "400": {"description": "A body that is not one, said why.", "content": _PROBLEM},
                "404": {"description": "No such inbound adapter.", "content": _PROBLEM},
                "409": {
                    "description": "Not paused (or not yet stopped in this process), an inbound that saves no position or keeps "
                    "its place in its source, or more than the filter changed (adopt without force): said why.",
                    "content": _PROBLEM,
                },
            },
        }
    }


def _query(name: str, description: str, *, kind: str = "string", fmt: str | None = None, **bounds: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": kind, **bounds, **({"format": fmt} if fmt else {})}
    return {"name": name, "in": "query", "required": False, "description": description, "schema": schema}


def _dead_letters(action: str, summary: str) -> dict[str, Any]:
    return {
        "post": {
            "operationId": f"{action}DeadLetters",
            "summary": summary + " Needs a write token; try `dry_run: true` first.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(DeadLetterAction)}}},
            "responses": {
                **_ok(_ref(DeadLetterDone), "How many matched, and how many were done."),
                "400": {"description": "No filter given, or a bad one.", "content": _PROBLEM},
                "404": {"description": "No such subscriber.", "content": _PROBLEM},
            },
        }
    }


def openapi_document() -> dict[str, Any]:
    models: list[type[BaseModel]] = [
        Problem,
        Topology,
        SubscriberNode,
        SubscriberDetail,
        ValidationReport,
        PauseRequest,
        PauseState,
        InboundPauseState,
        PositionState,
        PositionChange,
        PositionChanged,
        DeadLetterPage,
        DeadLetterAction,
        DeadLetterDone,
        RedeliveryRequest,
        RedeliveryDone,
        BackfillRequest,
        BackfillDone,
        ReconcileBalance,
        EventLineage,
        EventSearch,
        MigrationRuns,
    ]
    _, schemas = models_json_schema([(m, "serialization") for m in models], ref_template=_REF, by_alias=True)
    components = dict(schemas.get("$defs", {}))
    subscribers = TypeAdapter(list[SubscriberNode]).json_schema(ref_template=_REF, mode="serialization", by_alias=True)
    not_found = {"404": {"description": "No such subscriber.", "content": _PROBLEM}}
    bad_body = {"400": {"description": "A bad body or parameter, said why.", "content": _PROBLEM}}
    held = {  # a redelivery or backfill: one per subscriber at a time across the hub (a claim on the control topic)
        "409": {
            "description": "A redelivery or backfill of the subscriber is under way, in this process or another one (the answer "
            "names it and where).",
            "content": _PROBLEM,
        },
        "503": {
            "description": "It stopped writing: its claim on the subscriber could not be renewed on the control topic (Kafka out "
            "of reach). Ask again: what it wrote is left out as delivered.",
            "content": _PROBLEM,
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Integration hub management API",
            "version": "1",
            "description": "See and steer a running hub. Every call needs `Authorization: Bearer <token>` (ops.tokens); "
            "errors are RFC 9457 problem details.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"bearer": []}],
        "paths": {
            "/topology": {
                "get": {
                    "operationId": "getTopology",
                    "summary": "Inbound adapters, routes and subscribers, with each one's live state.",
                    "responses": _ok(_ref(Topology), "The topology."),
                }
            },
            "/subscribers": {
                "get": {
                    "operationId": "listSubscribers",
                    "summary": "Every subscriber's delivery state.",
                    "responses": _ok(subscribers, "The subscribers."),
                }
            },
            "/subscribers/{name}": {
                "get": {
                    "operationId": "getSubscriber",
                    "summary": "One subscriber in detail, with its ledger balance.",
                    "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {**_ok(_ref(SubscriberDetail), "The subscriber."), **not_found},
                }
            },
            "/subscribers/{name}/pause": _pause("pause", "Stop delivering to it, in every replica within seconds: events wait in Kafka."),
            "/subscribers/{name}/resume": _pause("resume", "Deliver to it again, in every replica within seconds."),
            "/subscribers/{name}/redeliver": {
                "post": {
                    "operationId": "redeliverToSubscriber",
                    "summary": "Send the subscriber again what it was delivered in a window of time (a target restored from a "
                    "backup), as `bus redeliver`: copies at the end of its delivery topic, delivered like any event. "
                    "Needs a write token; try `dry_run: true` first.",
                    "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(RedeliveryRequest)}}},
                    "responses": {
                        **_ok(_ref(RedeliveryDone), "What the window held, what was sent again and what was left out, and why."),
                        **bad_body,
                        "404": {"description": "No such subscriber, or nothing was ever routed to it.", "content": _PROBLEM},
                        **held,
                    },
                }
            },
            "/subscribers/{name}/backfill": {
                "post": {
                    "operationId": "backfillSubscriber",
                    "summary": "Give the subscriber the events its routes give it from what reached the canonical topics in a window "
                    "of time (a system that just joined), as `bus backfill`: written at the end of its delivery topic, delivered "
                    "like any event; what it already has, or has newer, is left out. Needs a write token; try `dry_run: true` first.",
                    "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(BackfillRequest)}}},
                    "responses": {
                        **_ok(_ref(BackfillDone), "What the window held, what was written and what was left out, and why."),
                        **bad_body,
                        "404": {"description": "No such subscriber, or it has no delivery topic.", "content": _PROBLEM},
                        **held,
                    },
                }
            },
            "/inbound/{name}/pause": _pause(
                "pause",
                "Stop reading its source, in every process of the inbound role within seconds: a poller, a replication slot or "
                "a drop folder is not read (positions kept), a queue's messages wait at the broker, a webhook answers 503 with "
                "Retry-After.",
                inbound=True,
            ),
            "/inbound/{name}/resume": _pause("resume", "Read its source again, from where it stopped.", inbound=True),
            "/positions": {
                "get": {
                    "operationId": "listPositions",
                    "summary": "Where each polling source reads from (its saved position), and whether that position is for what "
                    "the config reads now, as `bus positions list --json` prints it.",
                    "responses": _ok({"type": "array", "items": _ref(PositionState)}, "One row per inbound that saves a position."),
                }
            },
            "/inbound/{name}/position/reset": _position(
                "reset",
                "Forget the inbound's saved position: when resumed, its source is read again from its start (`bus positions reset`).",
            ),
            "/inbound/{name}/position/adopt": _position(
                "adopt",
                "Keep the inbound's saved position for what the config reads now, after its filter changed on purpose: records the "
                "new filter lets in that sit before the position are not read (`bus positions adopt`).",
            ),
            "/dead-letters": {
                "get": {
                    "operationId": "listDeadLetters",
                    "summary": "Dead letters, newest last, a page at a time (the filters of `bus dlq list`).",
                    "parameters": [
                        _query("subscriber", "One subscriber: an outbound adapter, `_router`, or `_in.<inbound>`."),
                        _query("id", "An event id, or a partition/offset position."),
                        _query("since", "Failed at or after (RFC 3339).", fmt="date-time"),
                        _query("until", "Failed before (RFC 3339).", fmt="date-time"),
                        _query("error_class", "PermanentError, RetryableError, ..."),
                        _query("all", "true: replayed and purged ones too.", kind="boolean"),
                        _query(
                            "offset",
                            "Skip this many (a deeper page: narrow with since, until or error_class).",
                            kind="integer",
                            minimum=0,
                            maximum=100_000,
                        ),
                        _query("limit", "At most this many (1 to 1000, default 100).", kind="integer", minimum=1, maximum=1000),
                    ],
                    "responses": {**_ok(_ref(DeadLetterPage), "A page of dead letters."), **bad_body, **not_found},
                }
            },
            "/dead-letters/replay": _dead_letters("replay", "Send the selected dead letters back where they failed (as `bus dlq replay`)."),
            "/dead-letters/purge": _dead_letters("purge", "Mark the selected dead letters purged (as `bus dlq purge`)."),
            "/reconcile": {
                "get": {
                    "operationId": "reconcile",
                    "summary": "Each subscriber's ledger balance, as `bus reconcile --json` prints it.",
                    "parameters": [
                        _query("subscriber", "One subscriber (default: all)."),
                        _query(
                            "window_s",
                            "Window of the time breakdown, in seconds (default 900).",
                            kind="integer",
                            minimum=1,
                            maximum=2678400,
                        ),
                    ],
                    "responses": {
                        **_ok({"type": "array", "items": _ref(ReconcileBalance)}, "One balance per subscriber."),
                        **bad_body,
                        **not_found,
                    },
                }
            },
            "/events": {
                "get": {
                    "operationId": "searchEvents",
                    "summary": "Event ids by a value: an event id, or a key or subject an inbound recorded.",
                    "parameters": [
                        {**_query("q", "The value to look for."), "required": True, "schema": {"type": "string", "minLength": 1}}
                    ],
                    "responses": {**_ok(_ref(EventSearch), "The ids found (none is not an error)."), **bad_body},
                }
            },
            "/events/{id}": {
                "get": {
                    "operationId": "getEventLineage",
                    "summary": "The lineage of one event: where it entered, the routes, each delivery, dead letters, where it is now.",
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        **_ok(_ref(EventLineage), "Its lineage."),
                        "404": {"description": "No event with this id is known (or lineage is off).", "content": _PROBLEM},
                    },
                }
            },
            "/migrations": {
                "get": {
                    "operationId": "listMigrationRuns",
                    "summary": "The runs of `bus migrate` in the journal this hub can see, with their progress.",
                    "responses": _ok(_ref(MigrationRuns), "The runs, oldest first (none is not an error)."),
                }
            },
            "/migrations/{run}/report": {
                "get": {
                    "operationId": "getMigrationReport",
                    "summary": "A run's reconciliation report, as the HTML page `bus migrate` wrote.",
                    "parameters": [{"name": "run", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {
                        "200": {"description": "The report.", "content": {"text/html": {"schema": {"type": "string"}}}},
                        "404": {"description": "No such run, or no report written for it yet.", "content": _PROBLEM},
                        **_ERRORS,
                    },
                }
            },
            "/config": {
                "get": {
                    "operationId": "getConfig",
                    "summary": "The config this hub runs, secrets masked (every value read from the environment or a file).",
                    "responses": _ok({"type": "object"}, "The config, as JSON."),
                }
            },
            "/config/validate": {
                "post": {
                    "operationId": "validateConfig",
                    "summary": "The checks of `bus validate` for the config in the body. Changes nothing.",
                    "description": "YAML as text/plain (application/yaml is read the same way), or the same document as JSON.",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "text/plain": {"schema": {"type": "string", "pattern": "\\S"}},  # not only white space
                            "application/json": {"schema": {"type": "object"}},
                        },
                    },
                    "responses": {**_ok(_ref(ValidationReport), "The report: valid, or every error at once."), **bad_body},
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "getOpenApi",
                    "summary": "This document.",
                    "responses": _ok({"type": "object"}, "The OpenAPI document."),
                }
            },
            "/webhooks.openapi.json": {
                "get": {
                    "operationId": "getWebhooksOpenApi",
                    "summary": "An OpenAPI 3.1 document of this hub's webhook endpoints (as `bus docs openapi`), for the senders.",
                    "responses": _ok({"type": "object"}, "The OpenAPI document of the webhook endpoints."),
                }
            },
            "/asyncapi.json": {
                "get": {
                    "operationId": "getAsyncApi",
                    "summary": "An AsyncAPI 3.0 document of this hub's topics and their Avro schemas (as `bus docs asyncapi`).",
                    "responses": _ok({"type": "object"}, "The AsyncAPI document."),
                }
            },
        },
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
