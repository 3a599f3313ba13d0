"""The container image, built from the project's Dockerfile and run, without a Docker daemon.

buildah builds the Dockerfile as it is (`--isolation chroot`, the host's network), on a stand-in
for its base image that debootstrap makes once per machine (`standin_base.sh`: no registry can
serve python:3.11-slim-bookworm here). podman runs the result with runc (crun cannot set up
cgroups here) and the explicit limits a pod would have, under the chart's security context: a
read-only root, a /tmp of its own, no capabilities, no privilege escalation.

What it proves: the image validates a config (and refuses a bad one, naming the field), runs the
quickstart on its embedded broker (webhooks in from the host, deliveries out to the host's
sample targets), answers its own HEALTHCHECK, and stops cleanly on SIGTERM as PID 1.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import IN_CI

# The first test of a worker waits for the build: on a machine that has no base image yet,
# debootstrap (a minute or two) and then the image's own build (its dependencies installed, a few
# minutes more on a loaded machine) come first. The build's own steps are bounded (600 s, 900 s).
pytestmark = pytest.mark.timeout(1800)

ROOT = Path(__file__).resolve().parents[2]
BASE_REPOSITORY = "localhost/bus-base"
BASE = f"{BASE_REPOSITORY}:3.11-slim-bookworm"  # the tag the Dockerfile pins
REPOSITORY = "localhost/integration-bus"
ENGINE = ["podman", "--runtime", "runc"]
# What a pod gets: explicit limits (the engine's defaults ask for more than this sandbox allows),
# and the chart's containerSecurityContext (readOnlyRootFilesystem, drop ALL, no escalation).
RUN_OPTIONS = [
    "--ulimit=nofile=4096:4096",
    "--ulimit=nproc=4096:4096",
    "--read-only",
    "--tmpfs=/tmp",
    "--cap-drop=ALL",
    "--security-opt=no-new-privileges",
]


def _missing() -> str | None:
    tools = [t for t in ("buildah", "podman", "runc", "debootstrap") if shutil.which(t) is None]
    if tools:
        return f"{', '.join(tools)} not installed (Debian's packages; `make test` installs them as root)"
    if os.geteuid() != 0:
        return "building the stand-in base image needs root (debootstrap)"
    return None


# What the Dockerfile copies into the image: the tag names a digest of these and of the base, so
# the test workers share one build (under a lock) and a build of the same sources is not repeated.
CONTEXT = ("Dockerfile", "pyproject.toml", "README.md", "bus", "adapters", "schemas", "routing", "ops")


def _context_digest(base_id: str) -> str:
    digest = hashlib.sha256(base_id.encode())
    for entry in CONTEXT:
        path = ROOT / entry
        files = sorted(p for p in path.rglob("*") if p.is_file() and "__pycache__" not in p.parts) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(ROOT)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    reason = _missing()
    if reason:
        if IN_CI:
            pytest.fail(f"the image cannot be built: {reason}; CI must run every test", pytrace=False)
        pytest.skip(reason)
    with open("/tmp/integration-bus-image-test.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time on this machine, shared by the workers
        subprocess.run(["bash", str(ROOT / "tests/image/standin_base.sh"), BASE], check=True, timeout=600)
        base_id = podman("image", "inspect", "--format={{.Id}}", BASE).stdout.strip()
        tag = f"{REPOSITORY}:test-{_context_digest(base_id)}"
        if podman("image", "exists", tag).returncode != 0:
            started = time.monotonic()
            built = run(
                [
                    "buildah", "build", "--isolation=chroot", "--network=host", "--pull=never",
                    "--format=docker",  # OCI images have no HEALTHCHECK; the Dockerfile declares one
                    f"--build-arg=PYTHON_IMAGE={BASE_REPOSITORY}", f"--tag={tag}", str(ROOT),
                ],
                timeout=900,
            )  # fmt: skip
            assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
            print(f"built {tag} in {time.monotonic() - started:.0f}s")
            # Earlier sources' images go: the storage keeps one test image, not one per run.
            listed = podman("images", "--format={{.Repository}}:{{.Tag}}", REPOSITORY).stdout.split()
            for old in (t for t in listed if t != tag and ":test-" in t):
                podman("rmi", "--force", old)
    yield tag


def run(command: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """A command's exit code and output; the test judges them."""
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def podman(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run([*ENGINE, *args], timeout)


def test_image_runs_unprivileged_with_its_healthcheck(image: str) -> None:
    [config] = json.loads(podman("image", "inspect", image).stdout)
    declared = config["Config"]
    assert declared["User"] == "10001:10001"
    assert declared["Entrypoint"] == ["bus"]
    assert config["Healthcheck"]["Test"][:3] == ["CMD", "bus", "health"]  # kept: a docker-format image
    assert config["Size"] < 600 * 1024 * 1024, f"the image grew to {config['Size'] / 1e6:.0f} MB"


def test_image_validates_a_config_and_names_a_bad_field(image: str, tmp_path: Path) -> None:
    mount = f"--volume={ROOT / 'examples/quickstart'}:/etc/bus:ro"
    good = podman("run", "--rm", *RUN_OPTIONS, mount, image, "validate", "--config", "/etc/bus/bus.yaml")
    assert good.returncode == 0, good.stderr
    assert "valid (1 inbound, 2 route(s), 2 outbound" in good.stdout

    shutil.copytree(ROOT / "examples/quickstart", tmp_path / "bad")
    config = tmp_path / "bad/bus.yaml"
    config.write_text(config.read_text().replace("    type: http\n", "    type: htp\n", 1))
    mount = f"--volume={tmp_path / 'bad'}:/etc/bus:ro"
    bad = podman("run", "--rm", *RUN_OPTIONS, mount, image, "validate", "--config", "/etc/bus/bus.yaml")
    assert bad.returncode != 0
    said = bad.stdout + bad.stderr
    assert "/etc/bus/bus.yaml" in said and "outbound" in said and "htp" in said, said


def test_quickstart_runs_from_the_image_and_stops_on_sigterm(image: str) -> None:
    """The README's quickstart, with the hub in the container: its sample source posts webhooks
    to the container, the routed events reach its sample targets on the host, and the SIGTERM it
    sends at the end (passed on by the engine to the hub, PID 1) stops the hub with exit code 0."""
    done = run(
        [
            sys.executable, str(ROOT / "examples/quickstart/run.py"), "--events", "120", "--timeout", "60",
            "--image", image, "--engine", " ".join(ENGINE), "--run-args", " ".join(RUN_OPTIONS),
        ],
        timeout=240,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    assert "quickstart OK" in done.stdout
    assert "hub stopped with exit code         0" in done.stdout
    assert '"message": "hub stopped cleanly"' in done.stderr + done.stdout  # JSON logs, as the image sets


def test_healthcheck_answers_and_podman_stop_is_a_clean_exit(image: str) -> None:
    """Detached, as an orchestrator runs it: the image's HEALTHCHECK (`bus health`) turns healthy
    once the hub is up, and `podman stop` (SIGTERM to PID 1) ends it with exit code 0, well
    inside the grace period, without falling back to SIGKILL."""
    name = f"bus-health-{uuid.uuid4().hex[:8]}"
    ports = {"WEBHOOK_PORT": str(_free_port()), "OPS_PORT": str(_free_port())}
    env = [f"--env={k}={v}" for k, v in ports.items()]
    mount = f"--volume={ROOT / 'examples/quickstart'}:/etc/bus:ro"
    started = podman("run", "--detach", f"--name={name}", "--network=host", *RUN_OPTIONS, *env, mount, image)
    assert started.returncode == 0, started.stderr
    try:
        deadline = time.monotonic() + 90
        health = podman("healthcheck", "run", name)
        while health.returncode != 0 and time.monotonic() < deadline:
            time.sleep(1)
            health = podman("healthcheck", "run", name)
        assert health.returncode == 0, podman("logs", name).stderr[-3000:]
        t0 = time.monotonic()
        stopped = podman("stop", "--time=30", name)
        took = time.monotonic() - t0
        assert stopped.returncode == 0, stopped.stderr
        exit_code = podman("inspect", "--format={{.State.ExitCode}}", name).stdout.strip()
        logs = podman("logs", name)
        assert exit_code == "0", logs.stdout[-3000:] + logs.stderr[-3000:]
        assert took < 30, "podman stop fell back to SIGKILL"
        assert '"message": "hub stopped cleanly"' in logs.stdout + logs.stderr
    finally:
        podman("rm", "--force", name)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
