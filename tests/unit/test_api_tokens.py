"""A management API token is one word of printable ASCII, whether it is given to the hub (ops.tokens,
a config error naming the field and never the value) or to the ``bus`` command (--token-file or
$BUS_OPS_TOKEN, said before anything is sent). Each odd one was a traceback on the CLI's side (a
folder, a binary file) or a token the hub could never match (a space, a line break, another script)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from bus.app.api_client import ApiRefused, token_from
from bus.config.models import OpsToken


@pytest.mark.parametrize("token", ["has space", "two\nlines", "\u043a\u043b\u044e\u0447", "", "x" * 4097])
def test_a_configured_token_that_no_header_can_carry_is_refused_without_its_value(token: str) -> None:
    with pytest.raises(ValidationError) as refused:
        OpsToken.model_validate({"name": "ci", "token": token})
    said = [error["msg"] for error in refused.value.errors(include_input=False)]  # as the config loader says it
    assert len(said) == 1 and "one word of printable ASCII" in said[0] and (not token or token not in said[0]), said


def test_a_token_file_that_holds_no_token_is_said(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary, lines, good = tmp_path / "key.der", tmp_path / "two", tmp_path / "token"
    binary.write_bytes(b"\x30\x82\xff\xfe")
    lines.write_text("abc\ndef\n")
    good.write_text("  s3cret-token\n")
    assert token_from(good) == "s3cret-token"
    for path, said in (
        (binary, "holds something other than a token (not ASCII text)"),
        (lines, "one line of ASCII without spaces"),
        (tmp_path, "cannot read --token-file"),
        (tmp_path / "none", "No such file or directory"),
    ):
        with pytest.raises(ApiRefused, match=re.escape(said)):
            token_from(path)
    monkeypatch.setenv("BUS_OPS_TOKEN", "\u043a\u043b\u044e\u0447")
    with pytest.raises(ApiRefused, match="BUS_OPS_TOKEN holds something other than a token"):
        token_from(None)
