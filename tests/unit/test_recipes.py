"""The recipes in examples/ as configs: each one validates, and `bus new` starts an integration
from any of them. (Each recipe runs end to end in tests/e2e/test_recipes.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from bus.app.cli import main
from bus.recipes import find_recipes, variables

RECIPES = {r.name: r for r in find_recipes()}
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIJLSk2XDmeizOMmPa+u1xp21ely5rtgHn9NsONHSEgD"  # an SFTP server's, as ssh-keyscan prints it


def test_the_nine_recipes_are_found_with_their_titles() -> None:
    assert sorted(RECIPES) == [
        "bank-statements-over-sftp",
        "ehr-visits-to-billing",
        "legacy-db-to-cases",
        "orders-to-redis-feed",
        "salesforce-hubspot-leads",
        "shop-orders-to-soap-erp",
        "shopify-orders-to-quickbooks",
        "stripe-payments-to-erp-ledger",
        "usage-drop-alerts",
    ]
    assert RECIPES["stripe-payments-to-erp-ledger"].title == "Stripe payments to the ERP ledger in MariaDB, reconciled"


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_every_recipe_config_validates_once_its_variables_are_set(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    config = RECIPES[name].folder / "bus.yaml"
    required = [v for v, default in variables(config.read_text()).items() if default is None]
    assert required, "a recipe that reads no secrets from the environment is suspicious"
    for variable in required:
        monkeypatch.delenv(variable, raising=False)
    assert main(["validate", "-c", str(config)]) == 2  # unset: a config error naming the variable
    for variable in required:
        value = (
            "1234"
            if variable.endswith("_ID")
            else "http://127.0.0.1:9/x"
            if variable.endswith("_URL")
            else HOST_KEY
            if variable.endswith("_HOST_KEY")
            else "value-for-" + variable.lower()
        )
        monkeypatch.setenv(variable, value)
    assert main(["validate", "-c", str(config)]) == 0


def test_bus_new_lists_copies_and_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new"]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in RECIPES)
    target = tmp_path / "my-shop"
    assert main(["new", "shopify-orders-to-quickbooks", str(target)]) == 0
    assert sorted(p.name for p in target.iterdir()) == [".env.example", "README.md", "bus.yaml", "schema.sql"]
    assert (target / "bus.yaml").read_text() == (RECIPES["shopify-orders-to-quickbooks"].folder / "bus.yaml").read_text()
    env = (target / ".env.example").read_text()
    assert "SHOPIFY_WEBHOOK_SECRET=    # required, a secret" in env
    assert "QUICKBOOKS_DEFAULT_CUSTOMER=1" in env
    # Every variable the config reads is there, the hub's own ones with their defaults.
    from bus.recipes import variables

    read = variables((target / "bus.yaml").read_text())
    assert [name for name in read if f"\n{name}=" not in env] == []
    assert "\nKAFKA_BOOTSTRAP=embedded\n" in env and "\nHTTP_PORT=" in env
    # The copy's README does not send the reader to a run.py that was not copied.
    readme = (target / "README.md").read_text()
    assert "examples/shopify-orders-to-quickbooks/run.py" not in readme.replace("(the demonstration: examples/", "")
    assert "Copied by `bus new shopify-orders-to-quickbooks`" in readme and "bus run -c bus.yaml" in readme
    capsys.readouterr()
    assert main(["new", "shopify-orders-to-quickbooks", str(target)]) == 2
    assert "exists and is not an empty folder" in capsys.readouterr().err
    assert main(["new", "no-such-recipe", str(tmp_path / "x")]) == 2
    assert "no recipe named 'no-such-recipe'; recipes: bank-statements-over-sftp, ehr-visits-to-billing" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
    (tmp_path / "a-file").write_text("")
    assert main(["new", "shopify-orders-to-quickbooks", str(tmp_path / "a-file" / "below")]) == 2  # a traceback
    assert "cannot write the recipe into" in capsys.readouterr().err


def test_the_loop_guard_route_tests_pass_and_fail_with_the_wrong_app_id(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = RECIPES["salesforce-hubspot-leads"].folder
    for name in ("SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET", "HUBSPOT_TOKEN", "HUBSPOT_CLIENT_SECRET"):
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("SALESFORCE_INTEGRATION_USER_ID", "005INTEGRATION0001")
    monkeypatch.setenv("HUBSPOT_APP_ID", "4131917")
    assert main(["test", "-c", str(folder / "bus.yaml"), str(folder / "tests.yaml")]) == 0
    capsys.readouterr()
    monkeypatch.setenv("HUBSPOT_APP_ID", "999")  # the guard no longer recognises the hub's own writes
    assert main(["test", "-c", str(folder / "bus.yaml"), str(folder / "tests.yaml")]) != 0
    assert "FAIL  " in capsys.readouterr().out


def test_bus_new_copies_the_contracts_a_recipe_names_so_the_copy_validates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "erp"
    assert main(["new", "shop-orders-to-soap-erp", str(target)]) == 0
    assert {"ledger.wsdl", "shop.graphql"} <= {p.name for p in target.iterdir()}
    for variable, default in variables((target / "bus.yaml").read_text()).items():
        if default is None:
            monkeypatch.setenv(variable, "http://127.0.0.1:9/x" if variable.endswith("_URL") else "value")
    assert main(["validate", "--strict", "-c", str(target / "bus.yaml")]) == 0  # the WSDL and schema were found beside it
    (target / "ledger.wsdl").unlink()
    assert main(["validate", "-c", str(target / "bus.yaml")]) == 2


def test_every_recipe_is_installed_with_the_package() -> None:
    """`bus new` in the image reads the recipes from <prefix>/share/integration-bus/examples/: a
    recipe missing from pyproject's data-files is listed from a checkout and absent once installed."""
    import tomllib

    root = next(iter(RECIPES.values())).folder.parents[1]
    data_files = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    for name, found in RECIPES.items():
        patterns = data_files.get(f"share/integration-bus/examples/{name}")
        assert patterns, f"{name} is not in pyproject's [tool.setuptools.data-files]"
        shipped = {p for pattern in patterns for p in root.glob(pattern)}
        copied = {p for p in found.folder.iterdir() if p.suffix in (".yaml", ".md", ".sql", ".wsdl", ".graphql")}
        assert copied <= shipped, f"{name}: {sorted(str(p) for p in copied - shipped)} not shipped"
