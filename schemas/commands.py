"""``bus schemas``: the CI gate and tools around schema evolution.

- ``check --registry URL``: may each schema in the catalog be registered after what the registry
  holds? (the registry's own compatibility level decides; nothing is written)
- ``check --against GIT_REF``: the same against the schema files as they were at a git ref, by
  ``--mode`` (default BACKWARD), without any registry: for a pull request's CI.
- ``register --registry URL``: register every schema of the catalog; refusals are printed with why.
- ``diff OLD NEW``: what breaks between two .avsc files, in both directions.

Exit codes: 0 compatible (or registered), 1 something is incompatible, 2 bad input (a file that is
not a schema, an unknown ref), 3 the registry could not be reached.
"""

from __future__ import annotations

__all__ = ["check_against_git", "check_against_registry", "diff", "register_all"]

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

from bus.documents import MAX_SCHEMA_FILE_BYTES, parse_json, read_at_most
from bus.errors import PermanentError, RetryableError
from bus.kafka.registry_client import RegistryClient
from schemas.catalog import SchemaCatalog
from schemas.compatibility import check, resolve

OK, INCOMPATIBLE, BAD_INPUT, UNREACHABLE = 0, 1, 2, 3


def _load(path: Path) -> Any:
    try:
        return parse_json(read_at_most(path, MAX_SCHEMA_FILE_BYTES))  # bounded in size and depth
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: not a schema file: {exc}") from exc


def diff(old: Path, new: Path, mode: str = "BACKWARD") -> tuple[int, str]:
    try:
        before, after = _load(old), _load(new)
    except ValueError as exc:
        return BAD_INPUT, str(exc)
    lines = []
    backward = resolve(after, before)
    forward = resolve(before, after)
    lines.append(f"new reads old data (BACKWARD): {'yes' if not backward else 'no'}")
    lines += [f"  {p}" for p in backward]
    lines.append(f"old reads new data (FORWARD): {'yes' if not forward else 'no'}")
    lines += [f"  {p.as_change(reader_is_new=False)}" for p in forward]
    problems = check(mode, after, [before])
    lines.append(f"{mode.upper()}: {'compatible' if not problems else 'incompatible'}")
    removed = [p for p in forward if p.kind == "field"]
    if removed and not problems and mode.upper().startswith("BACKWARD"):
        lines.append(
            f"note: {mode.upper()} allows removing a field with no default ({', '.join(p.path for p in removed)}), but a "
            "consumer not yet upgraded fails on new data; upgrade every consumer first, or use FULL to forbid it"
        )
    return (OK if not problems else INCOMPATIBLE), "\n".join(lines)


async def check_against_registry(catalog: SchemaCatalog, url: str, *, token: str | None = None) -> tuple[int, str]:
    client = RegistryClient(url, token=token)
    lines, worst = [], OK
    try:
        for schema in catalog:
            compatible, messages = await client.compatibility(schema.subject, schema.text)
            lines.append(f"{schema.subject}: {'ok' if compatible else 'INCOMPATIBLE'}")
            lines += [f"  {m}" for m in messages]
            worst = max(worst, OK if compatible else INCOMPATIBLE)
    except RetryableError as exc:
        return UNREACHABLE, "\n".join([*lines, str(exc)])
    finally:
        await client.close()
    return worst, "\n".join(lines)


async def register_all(catalog: SchemaCatalog, url: str, *, token: str | None = None) -> tuple[int, str]:
    """Register every schema; ``token``: a write token for a registry behind the hub's ops port."""
    client = RegistryClient(url, token=token)
    lines, worst = [], OK
    try:
        for schema in catalog:
            try:
                schema_id = await client.register(schema.subject, schema.text)
                lines.append(f"{schema.subject}: id {schema_id}")
            except PermanentError as exc:
                lines.append(f"{schema.subject}: REFUSED: {exc}")
                worst = INCOMPATIBLE
    except RetryableError as exc:
        return UNREACHABLE, "\n".join([*lines, str(exc)])
    finally:
        await client.close()
    return worst, "\n".join(lines)


def _git(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    git = shutil.which("git")
    if git is None:
        raise OSError("git is not installed")
    # A list, no shell: the ref is the user's own command-line argument, passed to git as one word.
    return subprocess.run([git, *args], cwd=cwd, capture_output=True, text=True, check=False)  # noqa: S603


def check_against_git(folder: Path, ref: str, mode: str = "BACKWARD") -> tuple[int, str]:
    """Each .avsc in ``folder`` against its version at ``ref`` (new files pass; removed ones are listed)."""
    try:
        found = _git(folder, "rev-parse", "--show-toplevel")
    except OSError as exc:
        return BAD_INPUT, str(exc)
    if found.returncode != 0:
        return BAD_INPUT, f"{folder} is not in a git work tree: {found.stderr.strip()}"
    top = Path(found.stdout.strip())
    lines, worst = [], OK
    now = {p.name: p for p in sorted(folder.glob("*.avsc"))}
    relative = folder.resolve().relative_to(top.resolve())
    listed = _git(top, "ls-tree", "--name-only", f"{ref}:{relative.as_posix()}")
    if listed.returncode != 0:
        return BAD_INPUT, f"cannot read {relative} at {ref}: {listed.stderr.strip()}"
    before_names = {n for n in listed.stdout.split() if n.endswith(".avsc")}
    for name, path in now.items():
        if name not in before_names:
            lines.append(f"{name}: new")
            continue
        old_text = _git(top, "show", f"{ref}:{(relative / name).as_posix()}").stdout
        try:
            problems = check(mode, _load(path), [json.loads(old_text)])
        except ValueError as exc:
            return BAD_INPUT, str(exc)
        lines.append(f"{name}: {'ok' if not problems else 'INCOMPATIBLE'} ({mode.upper()} against {ref})")
        lines += [f"  {p}" for p in problems]
        worst = max(worst, OK if not problems else INCOMPATIBLE)
    for name in sorted(before_names - set(now)):
        lines.append(f"{name}: REMOVED (readers of its topic lose their schema)")
        worst = INCOMPATIBLE
    return worst, "\n".join(lines)
