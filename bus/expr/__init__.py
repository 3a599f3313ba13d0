"""The hub's small expression language, compiled once at start-up into Python closures.

See ``bus.expr.parser`` for the syntax, ``bus.expr.functions`` for the function library and
``bus.expr.template`` for ``${...}`` string templates; docs/expressions.md for users.
"""

from bus.expr.functions import FUNCTIONS
from bus.expr.parser import EVALUATION_ERRORS, Compiled, Conditions, compile_conditions, compile_expression
from bus.expr.template import Template, compile_template

__all__ = [
    "EVALUATION_ERRORS",
    "FUNCTIONS",
    "Compiled",
    "Conditions",
    "Template",
    "compile_conditions",
    "compile_expression",
    "compile_template",
]
