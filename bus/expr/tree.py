"""The syntax tree of an expression, kept beside its compiled form for the config checker.

The parser builds it once, at start-up, as it compiles; nothing on the event path reads it.
Every node carries ``pos``, its 0-based offset in the expression text, so a problem found in
it can point at the exact character.
"""

from __future__ import annotations

__all__ = ["Binary", "Call", "Const", "Field", "Index", "ListOf", "Meta", "Node", "Unary", "children", "dotted", "facts", "paths", "show"]

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Const:
    value: Any
    pos: int


@dataclass(frozen=True, slots=True)
class Field:
    """``name`` read from the document (``base`` None) or from ``base``'s value."""

    base: Node | None
    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Index:
    base: Node
    index: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Meta:
    """``$name``: event metadata."""

    name: str
    pos: int


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    args: tuple[Node, ...]
    pos: int


@dataclass(frozen=True, slots=True)
class Binary:
    op: str
    left: Node
    right: Node
    pos: int


@dataclass(frozen=True, slots=True)
class Unary:
    op: str  # "not" or "-"
    operand: Node
    pos: int


@dataclass(frozen=True, slots=True)
class ListOf:
    items: tuple[Node, ...]
    pos: int


Node = Const | Field | Index | Meta | Call | Binary | Unary | ListOf


def children(node: Node) -> tuple[Node, ...]:
    if isinstance(node, Field):
        return (node.base,) if node.base is not None else ()
    if isinstance(node, Index):
        return (node.base, node.index)
    if isinstance(node, Call):
        return node.args
    if isinstance(node, Binary):
        return (node.left, node.right)
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, ListOf):
        return node.items
    return ()


def paths(node: Node) -> set[str]:
    """The document paths ``node`` reads (``data.object.id``; ``lines`` for ``lines[0].sku``)."""
    path = dotted(node)
    if path is not None:
        return {path}
    return set().union(*(paths(child) for child in children(node))) if children(node) else set()


def dotted(node: Node) -> str | None:
    """``a.b.c`` for a chain of plain field reads from the document, else None."""
    parts: list[str] = []
    current: Node | None = node
    while isinstance(current, Field):
        parts.append(current.name)
        current = current.base
    if current is not None or not parts:
        return None
    return ".".join(reversed(parts))


def show(node: Node) -> str:
    """The expression text of ``node`` (normalised), for messages."""
    if isinstance(node, Const):
        return "null" if node.value is None else ("true" if node.value is True else "false" if node.value is False else repr(node.value))
    if isinstance(node, Field):
        return node.name if node.base is None else f"{show(node.base)}.{node.name}"
    if isinstance(node, Index):
        return f"{show(node.base)}[{show(node.index)}]"
    if isinstance(node, Meta):
        return f"${node.name}"
    if isinstance(node, Call):
        return f"{node.name}({', '.join(show(a) for a in node.args)})"
    if isinstance(node, Unary):
        return f"not {show(node.operand)}" if node.op == "not" else f"-{show(node.operand)}"
    if isinstance(node, ListOf):
        return f"[{', '.join(show(i) for i in node.items)}]"
    return f"({show(node.left)} {node.op} {show(node.right)})"


def facts(node: Node) -> frozenset[str]:
    """Field paths that are not null wherever ``node`` held: what ``and`` may rely on on its right."""
    if isinstance(node, Binary):
        if node.op == "and":
            return facts(node.left) | facts(node.right)
        sides = [s for s in (node.left, node.right) if dotted(s) is not None]
        other = {id(node.left): node.right, id(node.right): node.left}
        if node.op == "!=" or node.op in ("<", "<=", ">", ">=", "in"):
            if node.op == "!=":
                sides = [s for s in sides if isinstance(other[id(s)], Const) and other[id(s)].value is None]  # type: ignore[union-attr]
            return frozenset(p for s in sides if (p := dotted(s)) is not None)
        if node.op == "==":
            return frozenset(
                p for s in sides if (p := dotted(s)) is not None and isinstance(o := other[id(s)], Const) and o.value is not None
            )
    if isinstance(node, Call) and node.name == "exists" and len(node.args) == 1:
        path = dotted(node.args[0])
        return frozenset({path}) if path is not None else frozenset()
    return frozenset()
