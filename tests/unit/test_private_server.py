"""The tests' private servers are started so that what they log can never stop them."""

from __future__ import annotations

import sys
from pathlib import Path

from tests.support.private_server import launch

# More than a pipe holds (64 KiB on Linux): a server whose output went to a pipe nobody read
# stopped at its next write.
_TALKATIVE = "import sys\nfor i in range(5000): print('LOG: starting logical decoding for slot', i, file=sys.stderr)"


def test_a_server_that_logs_more_than_a_pipe_holds_runs_on_and_its_log_is_kept(tmp_path: Path) -> None:
    server = launch([sys.executable, "-c", _TALKATIVE], tmp_path)
    assert server.wait(timeout=30) == 0
    log = (tmp_path / "server.log").read_text()
    assert log.count("starting logical decoding") == 5000
    assert len(log) > 65536
