"""``bus schemas diff`` and ``bus schemas check --against GIT_REF``: the CI gate without a registry,
on a real git repository made for the test."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from bus.app.cli import main

V1 = {"type": "record", "name": "Order", "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": "long"}]}
V2_OK = {**V1, "fields": [*V1["fields"], {"name": "channel", "type": "string", "default": "web"}]}
V2_BAD = {**V1, "fields": [{"name": "id", "type": "string"}, {"name": "amount", "type": "int"}]}


def git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def test_diff_reports_both_directions(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "old.avsc").write_text(json.dumps(V1))
    (tmp_path / "new.avsc").write_text(json.dumps(V2_BAD))
    assert main(["schemas", "diff", str(tmp_path / "old.avsc"), str(tmp_path / "new.avsc")]) == 1
    out = capsys.readouterr().out
    assert "new reads old data (BACKWARD): no\n  Order.amount: type narrowed from long to int" in out
    assert "old reads new data (FORWARD): yes" in out
    assert main(["schemas", "diff", str(tmp_path / "old.avsc"), str(tmp_path / "new.avsc"), "--mode", "FORWARD"]) == 0
    (tmp_path / "broken.avsc").write_text("{")
    assert main(["schemas", "diff", str(tmp_path / "old.avsc"), str(tmp_path / "broken.avsc")]) == 2


def test_check_against_a_git_ref(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "schemas"
    folder.mkdir()
    git(tmp_path, "init", "-q")
    (folder / "Order.avsc").write_text(json.dumps(V1))
    (folder / "Gone.avsc").write_text(json.dumps({**V1, "name": "Gone"}))
    git(tmp_path, "add", ".")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "v1")

    (folder / "Order.avsc").write_text(json.dumps(V2_OK))
    (folder / "New.avsc").write_text(json.dumps({**V1, "name": "New"}))
    (folder / "Gone.avsc").unlink()
    assert main(["schemas", "check", "--against", "HEAD", "--dir", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "Order.avsc: ok (BACKWARD against HEAD)" in out and "New.avsc: new" in out and "Gone.avsc: REMOVED" in out

    git(tmp_path, "rm", "-q", "--cached", "schemas/Gone.avsc")
    git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@x", "commit", "-qm", "drop Gone")
    (folder / "Order.avsc").write_text(json.dumps(V2_BAD))
    assert main(["schemas", "check", "--against", "HEAD", "--dir", str(folder)]) == 1
    assert "Order.amount: type narrowed from long to int" in capsys.readouterr().out
    assert main(["schemas", "check", "--against", "no-such-ref", "--dir", str(folder)]) == 2


def test_diff_of_a_file_nested_past_any_schema_is_said(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old, deep = tmp_path / "old.avsc", tmp_path / "deep.avsc"
    old.write_text(json.dumps({"type": "record", "name": "X", "fields": []}))
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert main(["schemas", "diff", str(old), str(deep)]) == 2  # a RecursionError traceback
    said = capsys.readouterr()
    assert "not a schema file: JSON nested more than 256 levels deep" in said.out + said.err
