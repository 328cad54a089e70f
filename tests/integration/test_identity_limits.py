"""Identity's revocation stream and its per-client limits, on real PostgreSQL over real gRPC.

A caller's address is the last X-Forwarded-For hop (the one Envoy appends), so these
tests stand in for distinct clients behind Envoy by sending that header."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import grpc
import pytest
import pytest_asyncio
from gofund.identity.v1 import identity_service_pb2

from services.common.errors import error_info
from services.common.server import ServiceRunner
from services.identity.domain import Limits
from services.identity.main import build
from services.stack import embedded, smtp_sink
from tests.conftest import migrated_database, settings_with
from tests.helpers import reason, rejected, within_one_window
from tests.integration.fixtures.identity import PASSWORD, IdentityUnderTest, bearer

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture(scope="module")
async def limited(
    postgres_port: int, mongodb_port: int, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[IdentityUnderTest]:
    url = migrated_database(postgres_port, "identity")
    smtp_port = embedded.free_port()
    controller, sink = smtp_sink.start(smtp_port)
    settings = settings_with(
        postgres_port,
        mongodb_port,
        tmp_path_factory.mktemp("identity_limits"),
        identity_database_url=url,
        smtp_port=smtp_port,
        registrations_per_client=3,
    )
    runner = ServiceRunner(build, settings, port=0)
    port = await runner.start()
    under_test = IdentityUnderTest(runner, port, url, sink)
    yield under_test
    await under_test.channel.close()
    await under_test.service_channel.close()
    await runner.stop()
    controller.stop()


async def register_from(identity: IdentityUnderTest, address: str) -> object:
    name = "l" + uuid.uuid4().hex[:12]
    return await identity.public.CreateUser(
        identity_service_pb2.CreateUserRequest(email=f"{name}@example.com", username=name, password=PASSWORD),
        metadata=(("x-forwarded-for", f"6.6.6.6, {address}"),),
    )


async def test_registrations_are_limited_per_client_address_with_a_retry_after(
    limited: IdentityUnderTest,
) -> None:
    within_one_window(Limits.registrations_per_client.window)
    for _ in range(3):
        await register_from(limited, "198.51.100.1")
    refused = await rejected(register_from(limited, "198.51.100.1"))
    assert (refused.code(), reason(refused)) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "RATE_LIMITED")
    info = error_info(refused)
    assert info is not None
    assert int(info.metadata["retry_after_s"]) > 0
    assert int(dict(refused.trailing_metadata() or ())["retry-after"]) > 0
    # The spoofable first hop is not the key: another client is unaffected.
    await register_from(limited, "198.51.100.2")


async def next_message(stream: object) -> identity_service_pb2.WatchRevocationsResponse:
    message = await asyncio.wait_for(stream.read(), timeout=5)  # type: ignore[attr-defined]
    assert isinstance(message, identity_service_pb2.WatchRevocationsResponse)
    return message


async def test_the_revocation_stream_pushes_logout_and_resumes_from_a_seq(limited: IdentityUnderTest) -> None:
    stream = limited.internal.WatchRevocations(identity_service_pb2.WatchRevocationsRequest())
    head = await next_message(stream)
    assert not head.revocations
    assert not head.reset
    user, token = await limited.user_with_token()
    await limited.public.DeleteCurrentSession(
        identity_service_pb2.DeleteCurrentSessionRequest(), metadata=bearer(token)
    )
    # Written to the stream before logout returned: no waiting here.
    pushed = await next_message(stream)
    (revocation,) = pushed.revocations
    assert revocation.user_id == user.id
    assert revocation.session_id
    assert pushed.seq > head.seq
    stream.cancel()
    # A subscriber that reconnects with the seq it had gets what it missed, then is live.
    resumed = limited.internal.WatchRevocations(identity_service_pb2.WatchRevocationsRequest(after_seq=head.seq))
    replay = await next_message(resumed)
    assert [r.seq for r in replay.revocations] == [revocation.seq]
    assert replay.seq >= pushed.seq
    resumed.cancel()


async def test_a_resume_position_the_log_no_longer_covers_asks_for_a_reset(limited: IdentityUnderTest) -> None:
    stream = limited.internal.WatchRevocations(identity_service_pb2.WatchRevocationsRequest(after_seq=10**12))
    message = await next_message(stream)
    assert message.reset
    stream.cancel()
