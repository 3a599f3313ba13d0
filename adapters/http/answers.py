"""What a target says inside a successful answer: ``refused_when`` and ``retry_when``.

Many services answer 200 and say inside the answer that they refused the call: Slack's
``{"ok": false}``, a legacy ERP's result code, a SOAP reply whose ``Status`` is ``REJECTED``.
Counted as deliveries, such refusals lost the event with nothing said. Two expressions over the
answer's document decide instead: ``retry_when`` (judged first) makes it a retry, ``refused_when``
a dead letter, each with the answer in the reason. ``$answer`` is the whole answer (a JSON list
of per-record results, as batch APIs give, has no fields to read otherwise). Shared by the HTTP-based outbounds (``http``,
``webhook``, ``graphql`` over the answer's JSON; ``soap`` over the decoded reply).
"""

from __future__ import annotations

__all__ = ["AnswerChecks"]

from typing import Any

from bus.adapter_api import ExpressionError, PermanentError, RetryableError, compile_expression

_NOT_HOLDING: tuple[Any, ...] = (None, False, 0, "", [], {})  # what an expression gives when it does not hold


class AnswerChecks:
    def __init__(self, *, retry_when: str | None, refused_when: str | None) -> None:
        self._checks = [
            (compile_expression(text), error, name)
            for text, error, name in ((retry_when, RetryableError, "retry_when"), (refused_when, PermanentError, "refused_when"))
            if text
        ]

    def __bool__(self) -> bool:
        return bool(self._checks)

    def judge(self, document: Any, said: str, text: str) -> None:
        """Raise RetryableError or PermanentError when ``document`` (the answer) says so; ``said``
        begins the reason ("POST https://... answered 200"), ``text`` is the answer as received."""
        for condition, error, name in self._checks:
            try:
                # Fields of an object answer are read by name; ``$answer`` is any answer whole (a JSON
                # list of per-record results has no fields: judged only by it).
                holds = condition(document, {"answer": document})
            except ExpressionError as exc:
                raise RetryableError(f"{said}, and {name} cannot be judged on its answer ({exc}): {text[:300]}") from exc
            if holds not in _NOT_HOLDING:
                raise error(f"{said}, and its answer says {name} ({condition.text}): {text[:300]}")
