"""A broker whose own record limit is lower than the hub's refuses an event with
MESSAGE_TOO_LARGE: the hub says so as it does for its own limit (a webhook's 413), and does not
tell the sender to retry what the broker will never take. The broker is librdkafka's mock cluster
(tests/support/mock_cluster.py), answering one produce request with the error."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from bus.app.setup import topic_specs
from bus.kafka.topics import TopicNames
from tests.support.hub import build_hub, load, payment, payment_hub_config, write_config
from tests.support.mock_cluster import ApiKey, ErrorCode, MockCluster

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def cluster() -> Iterator[MockCluster]:
    with MockCluster(brokers=1) as mock:
        yield mock
    gc.collect()


@pytest.mark.timeout(120)
async def test_an_event_the_broker_refuses_as_too_large_is_413_not_503(tmp_path: Path, cluster: MockCluster) -> None:
    config = payment_hub_config(cluster.bootstrap, "http://127.0.0.1:9", produce_timeout_s=5)
    path = write_config(tmp_path / "bus.yaml", config)
    loaded, _, _ = load(path)
    cluster.create_topics(topic_specs(loaded, TopicNames(config["kafka"]["topic_prefix"])), replication_factor=1)
    async with build_hub(path, role="inbound") as hub:
        assert hub.web is not None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{hub.web.port}", headers={"X-API-Key": "k1"}, timeout=30) as client:
            assert (await client.post("/hooks/payments", json=payment(1))).status_code == 202
            cluster.inject(ApiKey.PRODUCE, [ErrorCode.MESSAGE_TOO_LARGE])
            refused = await client.post("/hooks/payments", json=payment(2))
            assert cluster.answered(ApiKey.PRODUCE, 1) == 1  # the broker's refusal is what answered it
            assert refused.status_code == 413, refused.text
            assert "the hub takes events of at most" in refused.json()["error"] and "Retry-After" not in refused.headers
            assert (await client.post("/hooks/payments", json=payment(3))).status_code == 202  # and it goes on
