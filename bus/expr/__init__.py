"""The hub's small expression language: parsed to a tree, compiled once at start-up to Python.

See ``bus.expr.parser`` for the syntax, ``bus.expr.compiler`` for how a tree becomes a function,
``bus.expr.functions`` for the function library and ``bus.expr.template`` for ``${...}`` string
templates; docs/expressions.md for users.
"""

from bus.expr.compiler import EVALUATION_ERRORS, Compiled, Conditions, compile_conditions, compile_expression, paths_of
from bus.expr.functions import FUNCTIONS
from bus.expr.template import Template, compile_template, one_level

__all__ = [
    "EVALUATION_ERRORS",
    "FUNCTIONS",
    "Compiled",
    "Conditions",
    "Template",
    "compile_conditions",
    "compile_expression",
    "compile_template",
    "one_level",
    "paths_of",
]
