"""An OpenAPI document a config names for a contract, that cannot be one: said as a ContractError
(``bus validate`` names the field), never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.openapi import ContractError, operation_in


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("deep.json", "[" * 100_000 + "]" * 100_000, "JSON nested more than 256 levels deep"),  # a RecursionError
        ("deep.yaml", "[" * 100_000 + "]" * 100_000, "nested too deeply to be an OpenAPI document"),  # a RecursionError
        ("broken.yaml", "openapi: 3.1.0\npaths: [unclosed\n", "not YAML: while parsing a flow sequence"),  # a YAMLError
        ("latin1.yaml", "title: caf\xe9\n", "cannot read the OpenAPI document"),
    ],
)
def test_a_document_that_cannot_be_read_is_a_contract_error(tmp_path: Path, name: str, text: str, said: str) -> None:
    path = tmp_path / name
    path.write_bytes(text.encode("latin-1"))
    with pytest.raises(ContractError, match=said):
        operation_in(path, "createInvoice")
