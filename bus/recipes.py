"""``bus new``: start an integration from one of the recipes in ``examples/``.

A recipe is a folder with a ``bus.yaml`` and a ``README.md`` (and sometimes a ``schema.sql``
for the target's tables, and route tests in ``tests.yaml``). ``bus new RECIPE DIR`` copies those into ``DIR`` and writes
``DIR/.env.example`` with every ``${VARIABLE}`` the config reads, so pointing the copy at real
systems is filling in one file. The stand-ins and ``run.py`` stay behind: they are the recipe's
demonstration and test, not part of an integration.
"""

from __future__ import annotations

__all__ = ["RECIPES", "Recipe", "copy_recipe", "find_recipes", "variables"]

import re
import shutil
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from bus.config.yaml_files import VARIABLE


def _recipes_folder() -> Path:
    """examples/ beside the package (a source checkout, an editable install), else where a wheel
    installs them (``<prefix>/share/integration-bus/examples``, pyproject's data-files)."""
    beside = Path(__file__).resolve().parents[1] / "examples"
    if beside.is_dir():
        return beside
    return Path(sysconfig.get_paths()["data"]) / "share" / "integration-bus" / "examples"


RECIPES = _recipes_folder()
_COPIED = ("bus.yaml", "README.md", "schema.sql", "tests.yaml")
# The other systems' contracts a config names (a WSDL and its XSDs, a GraphQL schema, an OpenAPI
# document): part of the integration, since `bus validate` reads them.
_CONTRACTS = ("*.wsdl", "*.xsd", "*.graphql", "*.openapi.yaml", "*.openapi.json")
# The hub's own settings, which every recipe reads too: listed apart in .env.example, with their
# defaults (a real deployment sets KAFKA_BOOTSTRAP; the rest can stay).
_RUNTIME = ("KAFKA_BOOTSTRAP", "TOPIC_PREFIX", "HTTP_PORT", "OPS_PORT")


@dataclass(frozen=True)
class Recipe:
    name: str
    folder: Path
    title: str


def find_recipes(root: Path = RECIPES) -> list[Recipe]:
    found = []
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            readme = folder / "README.md"
            if (folder / "bus.yaml").is_file() and readme.is_file() and folder.name != "quickstart":
                title = readme.read_text(encoding="utf-8").splitlines()[0].lstrip("# ").strip()
                found.append(Recipe(folder.name, folder, title))
    return found


def variables(config_text: str) -> dict[str, str | None]:
    """``${NAME}`` and ``${NAME:-default}`` in a config, in order of appearance: name -> default."""
    found: dict[str, str | None] = {}
    for match in VARIABLE.finditer(config_text):
        name = match.group(1)
        if not name.startswith("file:") and name not in found:
            found[name] = match.group(2)
    return found


def _readme_for_a_copy(recipe: Recipe, text: str) -> str:
    """The recipe's README, saying where its demonstration is: ``run.py`` and the stand-ins for the
    real systems stay in the hub's source tree, so a command that runs them is replaced here."""
    note = (
        f"> Copied by `bus new {recipe.name}`. The demonstration (`run.py`, with stand-ins for the real systems) is in the\n"
        f"> hub's source tree, `examples/{recipe.name}/`. Here: fill in `.env.example`, then\n"
        "> `bus validate -c bus.yaml` and `bus run -c bus.yaml`.\n\n"
    )
    lines = [
        f"bus validate -c bus.yaml && bus run -c bus.yaml   # (the demonstration: examples/{recipe.name}/run.py in the source tree)"
        if "run.py" in line and line.lstrip().startswith((".venv/", "python", "$ python"))
        else line
        for line in text.splitlines()
    ]
    title, _, rest = "\n".join(lines).partition("\n")
    return f"{title}\n\n{note}{rest.lstrip()}\n"


def copy_recipe(recipe: Recipe, target: Path) -> list[Path]:
    """Copy the recipe's config, README, schema and contracts into ``target`` (new or empty) and
    write ``.env.example``; returns the files written."""
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise FileExistsError(f"{target} exists and is not an empty folder: choose a new one")
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name in _COPIED:
        source = recipe.folder / name
        if name == "README.md" and source.is_file():
            (target / name).write_text(_readme_for_a_copy(recipe, source.read_text(encoding="utf-8")), encoding="utf-8")
            written.append(target / name)
        elif source.is_file():
            written.append(Path(shutil.copy2(source, target / name)))
    for pattern in _CONTRACTS:
        written += [Path(shutil.copy2(source, target / source.name)) for source in sorted(recipe.folder.glob(pattern))]
    lines = [
        f"# Variables read by {target.name}/bus.yaml (from the recipe {recipe.name}); set them, then:",
        "#   bus validate -c bus.yaml && bus run -c bus.yaml",
        "",
    ]
    found = variables((recipe.folder / "bus.yaml").read_text(encoding="utf-8"))
    for name, default in found.items():
        if name in _RUNTIME:
            continue
        secret = re.search(r"SECRET|TOKEN|KEY|PASSWORD|AUTH", name)
        lines.append(
            f"{name}={default or ''}" + ("" if default is not None else ("    # required, a secret" if secret else "    # required"))
        )
    hub_own = [(name, found[name]) for name in _RUNTIME if name in found]
    if hub_own:
        lines += ["", "# The hub's own settings (embedded: a broker inside the hub, to try it; in production a Kafka's host:port)"]
        lines += [f"{name}={default or ''}" for name, default in hub_own]
    env = target / ".env.example"
    env.write_text("\n".join(lines) + "\n", encoding="utf-8")
    written.append(env)
    return written
