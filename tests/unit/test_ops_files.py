"""The alert rules and dashboards shipped in ops/ (and copied into the Helm chart) are valid,
tested, and what the code generates."""

from __future__ import annotations

import json
import re
import subprocess

from ops.grafana.__main__ import OUT, RULES, render
from ops.grafana.dashboards import DASHBOARDS, panel_queries
from tests.support.tools import ROOT, tool


def test_alert_rules_pass_promtool_check() -> None:
    result = subprocess.run([tool("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    alerts = RULES.read_text().count("- alert: ")
    assert f"SUCCESS: {alerts} rules found" in result.stdout  # every alert in the file was read as one


def test_alert_rules_fire_on_their_stories() -> None:
    # rules_test.yml plays each failure (lag rising, dead letters, an open circuit, a silent source,
    # errors, an unbalanced ledger) beside a healthy neighbour that must stay quiet.
    result = subprocess.run(
        [tool("promtool"), "test", "rules", "rules_test.yml"], cwd=RULES.parent, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_test_story() -> None:
    alerts = set(re.findall(r"- alert: (\w+)", RULES.read_text()))
    tested = set(re.findall(r"alertname: (\w+)", (RULES.parent / "rules_test.yml").read_text()))
    assert alerts == tested


def test_committed_dashboards_and_chart_copies_are_what_the_code_generates() -> None:
    for folder in OUT:
        for name, text in render().items():
            assert (folder / name).read_text() == text, f"{folder / name} is stale: run `python -m ops.grafana`"
    assert (ROOT / "helm/bus/files/rules.yml").read_text() == RULES.read_text(), "chart rules are stale: run `python -m ops.grafana`"


def test_dashboards_are_well_formed() -> None:
    for name, build in DASHBOARDS.items():
        board = build()
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), name
        assert json.loads(json.dumps(board)) == board
        for title, expr in panel_queries(board):
            assert expr.count("(") == expr.count(")"), f"{name}/{title}: {expr}"
            for variable in re.findall(r"\$(\w+)", expr):
                assert variable == "__rate_interval" or any(v["name"] == variable for v in board["templating"]["list"]), (
                    f"{name}/{title} uses ${variable}, which the dashboard does not define"
                )


def test_every_alert_links_its_runbook() -> None:
    operations = (ROOT / "docs/operations.md").read_text()
    headings = {h.lower() for h in re.findall(r"^### (Bus\w+)$", operations, re.M)}
    for alert, url in re.findall(r'- alert: (\w+)\n(?:.*\n)*?\s+runbook_url: "([^"]+)"', RULES.read_text()):
        assert url.endswith(f"docs/operations.md#{alert.lower()}"), (alert, url)
        assert alert.lower() in headings, f"no runbook section '### {alert}' in docs/operations.md"
    assert len(re.findall("runbook_url", RULES.read_text())) == len(re.findall("- alert:", RULES.read_text()))
