"""The transport contract (tests/unit/test_transport_contract.py) against a real nats-server:
the same test functions, with two NATS connections instead of two in-process transports."""

from collections.abc import AsyncIterator

import pytest
from switchboard.actors.transport_nats import NatsTransport
from switchboard.supervisor.nats_server import NatsServer

from tests.unit.test_transport_contract import Pair, TransportContract

pytestmark = pytest.mark.integration


class TestNatsTransport(TransportContract):
    @pytest.fixture
    async def pair(self, nats_server: NatsServer) -> AsyncIterator[Pair]:
        first = await NatsTransport.connect(nats_server.url, name="contract-1")
        second = await NatsTransport.connect(nats_server.url, name="contract-2")
        yield first, second
        await first.close()
        await second.close()
