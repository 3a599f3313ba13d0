"""Reading a config's YAML: one file or a folder of them, each node's file and line kept, ``${...}``
interpolated, the files merged (list sections appended in file order). Refuses what could hang
or exhaust the loader (YAML aliases expanded over and over, nesting thousands deep).

Interpolation: ``${NAME}``, ``${NAME:-default}``, and ``${file:/path}`` (a secret read from a
file, stripped of its trailing newline). Values never appear in error messages.
"""

from __future__ import annotations

__all__ = ["VARIABLE", "Marks", "config_files", "dotted", "merge", "read_marked"]

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bus.documents import MAX_DOCUMENT_FILE_BYTES, FileTooLarge, read_at_most
from bus.errors import ConfigError, ConfigIssue

Loc = tuple[str | int, ...]
# ``$${...}`` is left as ``${...}`` for the template fields of adapters and routes (``${field}``).
_VAR = re.compile(r"(?<!\$)\$\{(file:[^}]+|[A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
VARIABLE = _VAR  # for tools that list what a config reads (bus new)
_LIST_SECTIONS = ("inbound", "routes", "outbound", "schema_dirs")
_MAX_SECRET_BYTES = 1_000_000  # a key, a token, a PEM chain: far less


class Marks:
    """Where each value came from: (file, line) by its path in the merged document."""

    def __init__(self) -> None:
        self.at: dict[Loc, tuple[str, int]] = {}

    def find(self, loc: Loc, default_file: str) -> tuple[str, int | None]:
        # A missing field has no line of its own: point at the closest enclosing block.
        for end in range(len(loc), -1, -1):
            hit = self.at.get(loc[:end])
            if hit is not None:
                return hit
        return default_file, None


def config_files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
        if not files:
            raise ConfigError([ConfigIssue(str(path), None, "", "folder holds no .yaml or .yml file")])
        return files
    if not path.exists():
        raise ConfigError([ConfigIssue(str(path), None, "", "file not found")])
    return [path]


def _interpolate(
    text: str, env: Mapping[str, str], where: str, issues: list[ConfigIssue], fld: str, *, found: set[str] | None = None
) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name.startswith("file:"):
            secret_path = Path(name[5:])
            try:
                content = read_at_most(secret_path, _MAX_SECRET_BYTES, f"secret file {secret_path}").decode().rstrip("\n")
            except FileTooLarge as exc:
                issues.append(ConfigIssue(where, None, fld, str(exc)))
                return ""
            except OSError as exc:
                issues.append(ConfigIssue(where, None, fld, f"cannot read secret file {secret_path}: {exc.strerror}"))
                return ""
            except UnicodeDecodeError:
                issues.append(ConfigIssue(where, None, fld, f"secret file {secret_path} is not UTF-8 text"))
                return ""
            if found is not None:
                found.add(content)
            return content
        value = env.get(name)
        if value is None:
            if default is not None:
                return default
            issues.append(
                ConfigIssue(
                    where,
                    None,
                    fld,
                    f"environment variable {name} is not set (use ${{{name}:-default}}; for a template field write $${{{name}}})",
                )
            )
            return ""
        if found is not None:
            found.add(value)
        return value

    return _VAR.sub(replace, text).replace("$${", "${")


# libyaml's parser where PyYAML was built with it (its wheels are): the same nodes and marks,
# several times faster than the pure-Python one on a config of hundreds of routes.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAX_VALUES = 200_000  # mappings, lists and scalars in one file once aliases are expanded; real configs have thousands


_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


def _given_twice(key: Any, first: int, again: int) -> str:
    # YAML keeps the last one: the first (a whole `routes:` list, a field's mapping) would be dropped unsaid.
    return f"{key!r} is given twice here (lines {first} and {again}); YAML would keep only the last one: merge them or remove one"


def _short(tag: str) -> str:
    return tag.replace("tag:yaml.org,2002:", "!!", 1)


class _TooLarge(Exception):
    pass


class _Refused(Exception):
    def __init__(self, line: int, field: str, message: str) -> None:
        super().__init__(message)
        self.line, self.field, self.message = line, field, message


def read_marked(path: Path) -> tuple[dict[str, Any], Marks]:
    """A YAML file beside a config (route tests) read as a config file is, every value's line kept
    and the same refusals (a key given twice, tags, aliases expanded without end), but nothing
    interpolated: ``${...}`` there is the data under test. ConfigError naming file and line."""
    issues: list[ConfigIssue] = []
    data, lines = _read_file(path, None, issues)
    if issues:
        raise ConfigError(issues)
    marks = Marks()
    marks.at = {loc: (str(path), line) for loc, line in lines.items()}
    return data, marks


def _read_file(
    path: Path, env: Mapping[str, str] | None, issues: list[ConfigIssue], found: set[str] | None = None
) -> tuple[dict[str, Any], dict[Loc, int]]:
    """Parse one YAML file into plain data plus the line of every mapping key and list item;
    ``${...}`` interpolated from ``env`` unless it is None."""
    name = str(path)
    text = ""
    try:
        try:
            text = read_at_most(path, MAX_DOCUMENT_FILE_BYTES, "the file").decode()
        except FileTooLarge as exc:
            issues.append(ConfigIssue(name, None, "", f"{exc}: not a config (split it into files)"))
            return {}, {}
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else None
        problem = f"YAML syntax: {exc.problem}"
        rows = text.splitlines()
        if mark is not None and mark.line < len(rows) and rows[mark.line][mark.column : mark.column + 1] == "`":
            # YAML keeps ` for itself: an expression that starts with a quoted field name (`Order ID`) must be quoted whole.
            problem += ': a value that starts with ` (a field name between backticks) must be in quotes: "`Order ID`"'
        issues.append(ConfigIssue(name, line, "", problem))
        return {}, {}
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
        issues.append(ConfigIssue(name, None, "", f"cannot read: {exc}"))
        return {}, {}
    except RecursionError:
        issues.append(ConfigIssue(name, None, "", "nested too deeply to be a config (thousands of levels)"))
        return {}, {}
    if node is None:
        return {}, {}
    lines: dict[Loc, int] = {}
    budget = [_MAX_VALUES]
    scalars = yaml.SafeLoader("")  # one constructor for the file's scalars, not one per value

    def walk(n: yaml.Node, loc: Loc) -> Any:
        budget[0] -= 1
        if budget[0] < 0:  # aliases expand as often as they are used: a "billion laughs" file never ends
            raise _TooLarge
        lines.setdefault(loc, n.start_mark.line + 1)
        if isinstance(n, yaml.CollectionNode) and n.tag not in _PLAIN_TAGS:  # !!python/object and the like: never built
            raise _Refused(n.start_mark.line + 1, dotted(loc), f"the YAML tag {_short(n.tag)} is not allowed in a config")
        if isinstance(n, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in n.value:
                key = str(key_node.value)
                line = key_node.start_mark.line + 1
                if key in out and key != "<<":
                    first = lines[(*loc, key)]
                    issues.append(ConfigIssue(name, line, dotted((*loc, key)), _given_twice(key, first, line)))
                lines[(*loc, key)] = line
                out[key] = walk(value_node, (*loc, key))
            return out
        if isinstance(n, yaml.SequenceNode):
            return [walk(item, (*loc, i)) for i, item in enumerate(n.value)]
        value = scalars.construct_object(n)  # scalar: reuse YAML's own typing rules
        if env is not None and isinstance(value, str) and "${" in value:
            issue_count = len(issues)
            value = _interpolate(value, env, name, issues, dotted(loc), found=found)
            for i in range(issue_count, len(issues)):
                issues[i] = ConfigIssue(name, n.start_mark.line + 1, issues[i].field, issues[i].message)
        return value

    try:
        data = walk(node, ())
    except yaml.MarkedYAMLError as exc:  # a scalar YAML cannot construct (``=``, an unknown tag)
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        issues.append(ConfigIssue(name, line, "", f"YAML: {exc.problem}"))
        return {}, {}
    except _Refused as refused:
        issues.append(ConfigIssue(name, refused.line, refused.field, refused.message))
        return {}, {}
    except _TooLarge:
        issues.append(ConfigIssue(name, None, "", f"expands to more than {_MAX_VALUES} values (YAML aliases used over and over?)"))
        return {}, {}
    except RecursionError:
        issues.append(ConfigIssue(name, None, "", "nested too deeply to be a config (a recursive YAML alias?)"))
        return {}, {}
    if not isinstance(data, dict):
        issues.append(ConfigIssue(name, 1, "", "the top level must be a mapping (kafka:, inbound:, routes:, outbound: ...)"))
        return {}, {}
    return data, lines


def merge(
    files: list[Path], env: Mapping[str, str], issues: list[ConfigIssue], found: set[str] | None = None
) -> tuple[dict[str, Any], Marks]:
    merged: dict[str, Any] = {}
    marks = Marks()
    for path in files:
        data, lines = _read_file(path, env, issues, found)
        offsets: dict[str, int] = {}
        for key, value in data.items():
            if key in _LIST_SECTIONS and isinstance(value, list):
                offsets[key] = len(merged.setdefault(key, []))
                merged[key].extend(value)
            elif key in merged:
                issues.append(ConfigIssue(str(path), lines.get((key,)), key, "defined in more than one file"))
            else:
                merged[key] = value
        for loc, line in lines.items():
            merged_loc = loc
            if loc and loc[0] in offsets and len(loc) > 1 and isinstance(loc[1], int):
                merged_loc = (loc[0], loc[1] + offsets[str(loc[0])], *loc[2:])
            marks.at.setdefault(merged_loc, (str(path), line))
    return merged, marks


def dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
