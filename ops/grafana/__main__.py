"""``python -m ops.grafana``: write the dashboards (and the alert rules) where Grafana, Prometheus
and the Helm chart read them. Run it after changing ``dashboards.py`` or the rules."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from ops.grafana.dashboards import DASHBOARDS

ROOT = Path(__file__).resolve().parents[2]
OUT = (ROOT / "ops" / "grafana" / "dashboards", ROOT / "helm" / "bus" / "files" / "dashboards")
RULES = ROOT / "ops" / "prometheus" / "rules.yml"


def render() -> dict[str, str]:
    return {f"bus-{name}.json": json.dumps(build(), indent=2, sort_keys=True) + "\n" for name, build in DASHBOARDS.items()}


def main() -> None:
    for folder in OUT:
        folder.mkdir(parents=True, exist_ok=True)
        for name, text in render().items():
            (folder / name).write_text(text)
    shutil.copyfile(RULES, ROOT / "helm" / "bus" / "files" / "rules.yml")
    print(f"wrote {len(DASHBOARDS)} dashboards to {', '.join(str(o.relative_to(ROOT)) for o in OUT)} and the rules to the chart")


if __name__ == "__main__":
    main()
