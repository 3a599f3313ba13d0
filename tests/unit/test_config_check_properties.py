"""Property: for generated schemas and configs that use them correctly, `bus validate` passes;
change one character of any one field reference and it fails, naming that reference."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from bus.app.cli import main

_KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
names = st.from_regex(r"[a-z]{3,8}", fullmatch=True).filter(lambda n: n not in _KEYWORDS)


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # string, long, nullable, record, records
    subs: tuple[str, ...] = ()  # field names of a record (or of the records of a list)


@st.composite
def schemas(draw: st.DrawFn) -> list[Field]:
    top = draw(st.lists(names, min_size=1, max_size=6, unique=True))
    fields = []
    for name in top:
        kind = draw(st.sampled_from(["string", "long", "nullable", "record", "records"]))
        subs = tuple(draw(st.lists(names, min_size=1, max_size=3, unique=True))) if kind in ("record", "records") else ()
        fields.append(Field(name, kind, subs))
    return fields


def _avro(fields: list[Field]) -> dict[str, Any]:
    def sub_record(f: Field) -> dict[str, Any]:
        return {"type": "record", "name": f"R_{f.name}", "fields": [{"name": s, "type": "string"} for s in f.subs]}

    types: dict[str, Any] = {"string": "string", "long": "long", "nullable": ["null", "string"]}
    out = []
    for f in fields:
        if f.kind == "record":
            out.append({"name": f.name, "type": sub_record(f)})
        elif f.kind == "records":
            out.append({"name": f.name, "type": {"type": "array", "items": sub_record(f)}})
        else:
            out.append({"name": f.name, "type": types[f.kind], **({"default": None} if f.kind == "nullable" else {})})
    return {"type": "record", "name": "Generated", "namespace": "gen", "fields": out}


def _sample(fields: list[Field]) -> dict[str, Any]:
    values: dict[str, Any] = {"string": "text", "long": 12, "nullable": None}
    data: dict[str, Any] = {}
    for f in fields:
        if f.kind == "record":
            data[f.name] = dict.fromkeys(f.subs, "x")
        elif f.kind == "records":
            data[f.name] = [dict.fromkeys(f.subs, "x")]
        else:
            data[f.name] = values[f.kind]
    return {"data": data}


# A reference site: where a name is written, and which names are valid there (a change that
# lands on one of them is not a typo).
Site = tuple[str, str]  # (kind of place, the reference as written: "name" or "name.sub")


def _config(fields: list[Field], change: dict[Site, str]) -> tuple[dict[str, Any], list[Site]]:
    sites: list[Site] = []

    def ref(kind: str, written: str) -> str:
        sites.append((kind, written))
        return change.get((kind, written), written)

    emit_map = {ref("emit key", f.name): "data." + ref("payload path", f.name) for f in fields}
    conditions, body = [], {}
    for f in fields:
        if f.kind in ("string", "nullable"):
            conditions.append(f'{ref("when", f.name)} != "x"')
            body[f"o_{f.name}"] = ref("body", f.name)
        elif f.kind == "long":
            conditions.append(f"{ref('when', f.name)} > 1")
            body[f"o_{f.name}"] = ref("body", f.name)
        else:
            sub = f.subs[0]
            base = f.name if f.kind == "record" else f"{f.name}[0]"
            whole = ref("when", f"{f.name}.{sub}")
            top, _, inner = whole.partition(".")
            reading = f"{top}.{inner}" if f.kind == "record" else f"{top}[0].{inner}"
            conditions.append(f'{reading} != "x"')
            body[f"o_{f.name}"] = base.replace(f.name, ref("body", f.name), 1)
    transform = {ref("transform key", f.name): ref("transform value", f.name) for f in fields}
    config = {
        "schema_dirs": ["schemas"],
        "inbound": [
            {
                "name": "source",
                "type": "http_webhook",
                "path": "/in",
                "emit": {"schema": "Generated", "payload": {"sample": "sample.json"}, "map": emit_map},
            }
        ],
        "routes": [
            {
                "name": "generated",
                "from": "Generated",
                "when": " and ".join(conditions),
                "transform": {"schema": "Generated", "map": transform},
                "to": ["target"],
            }
        ],
        "outbound": [{"name": "target", "type": "http", "url": "http://target.local/", "body": body}],
    }
    return config, sites


def _valid_names(fields: list[Field], site: Site) -> set[str]:
    top = {f.name for f in fields}
    if "." in site[1]:
        owner = next(f for f in fields if f.name == site[1].split(".")[0])
        return {f"{site[1].split('.')[0]}.{s}" for s in owner.subs} | {f"{n}.{site[1].split('.')[1]}" for n in top}
    return top


def _validate(folder: Path, fields: list[Field], config: dict[str, Any]) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    (folder / "schemas").mkdir(exist_ok=True)
    (folder / "schemas" / "Generated.avsc").write_text(json.dumps(_avro(fields)))
    (folder / "sample.json").write_text(json.dumps(_sample(fields)))
    (folder / "bus.yaml").write_text(json.dumps(config, indent=1))  # JSON is YAML
    return _run(folder / "bus.yaml")


def _run(path: Path) -> tuple[int, list[dict[str, Any]], list[dict[str, Any]]]:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["validate", "--json", "-c", str(path)])
    report = json.loads(out.getvalue())
    return code, report["errors"], report["warnings"]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=schemas())
def test_a_config_that_uses_its_schema_correctly_validates(tmp_path: Path, fields: list[Field]) -> None:
    config, _ = _config(fields, {})
    assert _validate(tmp_path, fields, config) == (0, [], [])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(fields=schemas(), data=st.data())
def test_one_changed_character_in_any_field_reference_is_refused_and_named(
    tmp_path: Path, fields: list[Field], data: st.DataObject
) -> None:
    _, sites = _config(fields, {})
    site = data.draw(st.sampled_from(sites), label="site")
    written = site[1]
    part = data.draw(st.sampled_from([0, 1] if "." in written else [0]), label="part")  # the field or its sub-field
    pieces = written.split(".")
    word = pieces[part]
    at = data.draw(st.integers(0, len(word) - 1), label="position")
    how = data.draw(st.sampled_from(["replace", "delete", "insert"]), label="how")
    letter = data.draw(st.sampled_from("abcdefghijklmnopqrstuvwxyz_"), label="letter")
    changed = {
        "replace": word[:at] + letter + word[at + 1 :],
        "delete": word[:at] + word[at + 1 :],
        "insert": word[:at] + letter + word[at:],
    }[how]
    assume(changed and changed[0] != "_" and changed not in _KEYWORDS and changed != word)
    pieces[part] = changed
    new = ".".join(pieces)
    assume(new not in _valid_names(fields, site))
    config, _ = _config(fields, {site: new})
    code, errors, _ = _validate(tmp_path, fields, config)
    assert code == 2, (site, new)
    assert any(f"'{changed}'" in e["message"] for e in errors), (site, new, errors)


@pytest.mark.parametrize("n", [1])
def test_the_generator_covers_every_kind_of_site(n: int) -> None:
    fields = [Field("amount", "long"), Field("customer", "record", ("name",)), Field("lines", "records", ("sku",))]
    _, sites = _config(fields, {})
    assert {kind for kind, _ in sites} == {"emit key", "payload path", "when", "body", "transform key", "transform value"}
