"""``matches()`` runs on values a sender chose: with Python's ``re``, a pattern as ordinary as a
copied e-mail check took minutes on a few dozen crafted characters, holding the event loop and
every flow in the process (the router, restarted, read the same event again). On RE2 the time
grows with the value, whatever the pattern; a pattern RE2 cannot run is a config error."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.errors import ExpressionError
from bus.expr import compile_expression
from bus.patterns import PatternError, compiled, search

# Each takes exponential time in Python's re on a value that almost matches: 28 characters of
# the first took about 30 s here, and every one more doubles it.
CATASTROPHIC = [
    ("(x+x+)+y", "x" * 50_000),
    ("^(a+)+$", "a" * 50_000 + "!"),
    (r"^([a-zA-Z0-9])(([\-.]|[_]+)?([a-zA-Z0-9]+))*(@){1}[a-z0-9]+[.]{1}(([a-z]{2,3})|([a-z]{2,3}[.]{1}[a-z]{2,3}))$", "a" * 50_000 + "!"),
]


@pytest.mark.timeout(30)
@pytest.mark.parametrize(("pattern", "value"), CATASTROPHIC)
def test_a_crafted_value_is_answered_in_linear_time_whatever_the_pattern(pattern: str, value: str) -> None:
    assert search(pattern, value) is False
    condition = compile_expression(f"matches(name, {pattern!r})")
    assert condition({"name": value}) is False
    assert condition({"name": value[:3] + "@ok.com" if "@" in pattern else "xxy" if "y" in pattern else "aaa"}) is True


def test_patterns_mean_what_they_mean_in_re_for_what_both_run() -> None:
    assert search(r"^pi_[0-9]+$", "pi_42") and not search(r"^pi_[0-9]+$", "pi_42x")
    assert search(r"(?i)^ACME", "acme corp") and search(r"caf.", "café") and search(r"\bend\b", "the end.")
    assert compile_expression('matches(data.object.id, "^pi_[0-9]+$")')({"data": {"object": {"id": "pi_1"}}}) is True


@pytest.mark.parametrize("pattern", ["(?=a)b", r"(a)\1", "(?<!x)y", "[unclosed"])
def test_a_pattern_re2_cannot_run_is_refused_when_the_config_loads_saying_why(pattern: str) -> None:
    with pytest.raises(ExpressionError, match="is not a pattern the hub runs") as raised:
        compile_expression(f"matches(name, {pattern!r})")
    assert "RE2 syntax" in str(raised.value)


def test_a_pattern_that_comes_with_the_data_is_checked_when_it_is_used() -> None:
    condition = compile_expression("matches(name, rule)")
    assert condition({"name": "abc", "rule": "^a"}) is True
    with pytest.raises(ExpressionError, match=r"cannot evaluate .*is not a pattern the hub runs"):
        condition({"name": "abc", "rule": "(?=a)"})
    with pytest.raises(PatternError):
        compiled("(?=a)")


@pytest.mark.timeout(30)
def test_a_contract_pattern_is_checked_on_re2_and_one_re2_cannot_run_still_on_re(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An OpenAPI contract's ``pattern`` tests a webhook sender's value before anything is published."""
    from bus.openapi import BodyCheck, operation_in

    document = tmp_path / "shop.openapi.yaml"
    document.write_text(
        "openapi: 3.1.0\ninfo: {title: Shop, version: '1'}\npaths:\n  /orders:\n    post:\n      operationId: orderCreated\n"
        "      requestBody:\n        content:\n          application/json:\n            schema:\n              type: object\n"
        "              properties:\n                code: {type: string, pattern: '^(x+x+)+y$'}\n"
        "                ref: {type: string, pattern: '^(?!TEST)[A-Z]+$'}\n"
    )
    check = BodyCheck(operation_in(document, "orderCreated"))
    assert check.problem({"code": "xxy", "ref": "LIVE"}) is None
    problem = check.problem({"code": "x" * 50_000})  # exponential in Python's re; linear here
    assert problem is not None and "does not match '^(x+x+)+y$'" in problem and "(at $.code)" in problem
    # A lookahead (RE2 has none) is still checked, with Python's re, and said once.
    assert "does not match" in (check.problem({"ref": "TESTX"}) or "")
    assert check.problem({"ref": "LIVE"}) is None
    assert [r.message for r in caplog.records if "checked with Python's re" in r.message][:1]


@pytest.mark.timeout(30)
def test_a_contracts_pattern_properties_run_on_re2_over_the_senders_keys(tmp_path: Path) -> None:
    """``patternProperties`` (and ``additionalProperties`` beside them) test the body's keys, which
    the sender chose, against the document's patterns: on RE2 too."""
    from bus.openapi import BodyCheck, operation_in

    document = tmp_path / "meta.openapi.yaml"
    document.write_text(
        "openapi: 3.1.0\ninfo: {title: Meta, version: '1'}\npaths:\n  /tags:\n    post:\n      operationId: setTags\n"
        "      requestBody:\n        content:\n          application/json:\n            schema:\n              type: object\n"
        "              properties: {id: {type: string}}\n"
        "              patternProperties: {'^(x+x+)+y$': {type: integer}}\n"
        "              additionalProperties: false\n"
    )
    check = BodyCheck(operation_in(document, "setTags"))
    assert check.problem({"id": "a", "xxy": 1}) is None
    assert "is not of type 'integer'" in (check.problem({"xxxy": "one"}) or "")
    crafted = "x" * 50_000  # a key: exponential in Python's re
    problem = check.problem({crafted: 1})
    assert problem is not None and "does not match any of the regexes: '^(x+x+)+y$'" in problem
    assert "Additional properties are not allowed ('other' was unexpected)" in (
        BodyCheck(operation_in(_without_patterns(tmp_path, document), "setTags")).problem({"other": 1}) or ""
    )


def _without_patterns(tmp_path: Path, document: Path) -> Path:
    plain = tmp_path / "plain.openapi.yaml"
    plain.write_text("\n".join(line for line in document.read_text().splitlines() if "patternProperties" not in line) + "\n")
    return plain


@pytest.mark.timeout(30)
def test_a_contracts_unevaluated_properties_find_pattern_keys_on_re2(tmp_path: Path) -> None:
    """``unevaluatedProperties`` asks which keys ``patternProperties`` evaluated, through ``allOf``
    and ``$ref`` too: jsonschema's own walk runs those patterns on Python's re over the sender's keys."""
    from bus.openapi import BodyCheck, operation_in

    document = tmp_path / "meta.openapi.yaml"
    document.write_text(
        "openapi: 3.1.0\ninfo: {title: Meta, version: '1'}\npaths:\n  /tags:\n    post:\n      operationId: setTags\n"
        "      requestBody:\n        content:\n          application/json:\n            schema:\n"
        "              allOf: [{$ref: '#/components/schemas/Tagged'}]\n"
        "              properties: {id: {type: string}}\n"
        "              unevaluatedProperties: false\n"
        "components:\n  schemas:\n    Tagged:\n      type: object\n"
        "      patternProperties: {'^(x+x+)+y$': {type: integer}}\n"
    )
    check = BodyCheck(operation_in(document, "setTags"))
    assert check.problem({"id": "a", "xxy": 1}) is None
    assert "Unevaluated properties are not allowed ('other' was unexpected)" in (check.problem({"id": "a", "other": 1}) or "")
    crafted = "x" * 50_000  # a key: exponential in Python's re
    problem = check.problem({crafted: 1})
    assert problem is not None and "Unevaluated properties are not allowed ('xxxx" in problem
