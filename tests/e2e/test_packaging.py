"""The project installed from its wheel, not from the checkout (what the image does): `bus new`
finds the recipes the wheel ships as data files."""

from __future__ import annotations

import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_bus_new_works_from_an_installed_wheel(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(  # offline: the dev extra has the setuptools pyproject's build-system asks for
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    [wheel] = wheels.glob("*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", str(wheel)], check=True, capture_output=True
    )
    # The dependencies from this environment (not its editable install of the project: a path
    # added by a .pth file is not a site directory, so the editable finder there is not run).
    purelib = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True
        ).stdout.strip()
    )
    (purelib / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    out = tmp_path / "my-integration"
    done = subprocess.run(
        [str(python), "-m", "bus.app.cli", "new", "stripe-payments-to-erp-ledger", str(out)],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    located = subprocess.run(
        [str(python), "-c", "import bus; print(bus.__file__)"], check=True, cwd=tmp_path, capture_output=True, text=True
    )
    assert located.stdout.startswith(str(venv))  # the wheel's copy ran, not the checkout
    assert sorted(p.name for p in out.iterdir()) == [".env.example", "README.md", "bus.yaml", "schema.sql"]
    assert (out / "bus.yaml").read_text() == (ROOT / "examples/stripe-payments-to-erp-ledger/bus.yaml").read_text()
