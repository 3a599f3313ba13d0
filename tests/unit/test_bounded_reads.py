"""Files a config or a command names are read only up to what such a file can hold: each of these,
given a path to /dev/zero (or a log, a disk image) by mistake, was read until memory ran out; now
each is refused at once, naming the file and the limit. The test's timeout is the proof that
nothing reads on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bus.app.cli import main
from bus.documents import FileTooLarge, read_at_most
from tests.support.hub import payment_hub_config, write_config

pytestmark = pytest.mark.timeout(60)

ZERO = Path("/dev/zero")


def zero(at: Path) -> Path:
    """A file that never ends, under an ordinary name."""
    at.symlink_to(ZERO)
    return at


def test_read_at_most_reads_a_file_up_to_its_limit_and_refuses_one_past_it(tmp_path: Path) -> None:
    exact = tmp_path / "exact"
    exact.write_bytes(b"x" * 10)
    assert read_at_most(exact, 10) == b"x" * 10
    with pytest.raises(FileTooLarge, match=r"the thing holds more than 9 bytes"):
        read_at_most(exact, 9, "the thing")
    with pytest.raises(FileTooLarge, match=r"/dev/zero holds more than 1,000 bytes"):
        read_at_most(ZERO, 1000)
    with pytest.raises(OSError):
        read_at_most(tmp_path / "missing", 10)


def validate_errors(tmp_path: Path, config: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    path = write_config(tmp_path / "bus.yaml", config)
    assert main(["validate", "--json", "-c", str(path)]) == 2
    return {f"{e['file']}|{e['field']}": e["message"] for e in json.loads(capsys.readouterr().out)["errors"]}


def test_a_kafka_outbound_schema_file_that_never_ends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = payment_hub_config("127.0.0.1:9", "http://127.0.0.1:9")
    config["outbound"][1] = {
        "name": "support", "type": "kafka", "bootstrap": "127.0.0.1:9", "topic": "t", "format": "avro",
        "registry_url": "http://127.0.0.1:9", "schema_file": str(zero(tmp_path / "partner.avsc")),
    }  # fmt: skip
    errors = validate_errors(tmp_path, config, capsys)
    said = " ".join(errors.values())
    assert "holds more than 10,000,000 bytes: not an Avro schema" in said, errors


def test_a_schema_file_in_schema_dirs_that_never_ends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "schemas"
    folder.mkdir()
    zero(folder / "Custom.avsc")
    config = payment_hub_config("127.0.0.1:9", "http://127.0.0.1:9")
    config["schema_dirs"] = [str(folder)]
    errors = validate_errors(tmp_path, config, capsys)
    assert any(key.startswith(str(folder / "Custom.avsc")) and "holds more than 10,000,000 bytes" in m for key, m in errors.items()), errors


def test_a_payload_sample_that_never_ends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = payment_hub_config("127.0.0.1:9", "http://127.0.0.1:9")
    config["inbound"][0]["emit"]["payload"] = {"sample": str(zero(tmp_path / "sample.json"))}
    errors = validate_errors(tmp_path, config, capsys)
    assert any("sample" in key and "holds more than 50,000,000 bytes" in m for key, m in errors.items()), errors


def test_nats_credentials_that_never_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A device says it holds 0 bytes, so the size the file system gave passed it."""
    config = payment_hub_config("127.0.0.1:9", "http://127.0.0.1:9")
    config["outbound"][1] = {
        "name": "support", "type": "nats", "url": "nats://127.0.0.1:9", "subject": "s", "credentials": str(zero(tmp_path / "hub.creds")),
    }  # fmt: skip
    errors = validate_errors(tmp_path, config, capsys)
    said = errors.get(f"{tmp_path / 'bus.yaml'}|outbound[1].credentials", "")
    assert "hub.creds holds more than 65,536 bytes: not a NATS credentials file" in said, errors


def test_a_graphql_schema_that_never_ends(tmp_path: Path) -> None:
    from adapters.graphql.documents import SchemaError, load_schema

    with pytest.raises(SchemaError, match=r"is not a GraphQL schema: .* holds more than 50,000,000 bytes"):
        load_schema(zero(tmp_path / "schema.graphql"))


def test_routes_explain_of_an_event_file_that_never_ends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path / "bus.yaml", payment_hub_config("127.0.0.1:9", "http://127.0.0.1:9"))
    assert main(["routes", "explain", "-c", str(config), str(zero(tmp_path / "event.json"))]) == 2
    err = capsys.readouterr().err
    assert "event.json holds more than 50,000,000 bytes: not an event" in err and "Traceback" not in err, err


def test_schemas_diff_of_a_file_that_never_ends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "old.avsc"
    good.write_text(json.dumps({"type": "record", "name": "T", "fields": [{"name": "a", "type": "string"}]}))
    assert main(["schemas", "diff", str(good), str(zero(tmp_path / "new.avsc"))]) == 2
    out = capsys.readouterr()
    assert "new.avsc holds more than 10,000,000 bytes" in out.err + out.out, out


def test_reconcile_target_ids_that_never_end(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from bus.app import kafka_commands

    monkeypatch.setattr(kafka_commands, "MAX_TARGET_IDS_BYTES", 1000)  # 512 MB is not worth reading to prove it
    config = write_config(tmp_path / "bus.yaml", payment_hub_config("127.0.0.1:9", "http://127.0.0.1:9"))
    ids = zero(tmp_path / "ids.txt")
    assert main(["reconcile", "-c", str(config), "--subscriber", "erp", "--target-ids", str(ids)]) == 2
    said = capsys.readouterr().err
    assert "--target-ids" in said and "ids.txt holds more than 1,000 bytes (one event id per line)" in said, said


def test_an_openapi_document_that_never_ends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = payment_hub_config("127.0.0.1:9", "http://127.0.0.1:9")
    config["inbound"][0]["emit"]["payload"] = {"openapi": {"document": str(zero(tmp_path / "shop.yaml")), "operation": "pay"}}
    errors = validate_errors(tmp_path, config, capsys)
    assert any("document" in key and "holds more than 50,000,000 bytes" in m for key, m in errors.items()), errors
