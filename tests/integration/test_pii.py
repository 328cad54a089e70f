"""A payout to a bank account leaves only the account's last four digits behind.

The owner registers a payout account, a goal is funded, released and paid out
through the Paystack simulator, whose transfer events carry the recipient's
full account number. Afterwards no collection of the payments database, no
table of the three PostgreSQL databases and no log line holds the full number.
"""

from __future__ import annotations

import io
import json
import logging
import random
import uuid
from typing import Any

import psycopg
import pytest
from bson import json_util
from gofund.goals.v1 import goals_pb2
from gofund.payments.v1 import payments_service_pb2

from services.common import log as gofund_log
from services.common.db import psycopg_dsn
from services.goals import domain
from tests.helpers import eventually
from tests.integration.fixtures.goals import Platform
from tests.integration.fixtures.payments import (
    approve_first_proof,
    paid_contribution,
    payments_db,
    sent_payout,
    settle,
)

pytestmark = pytest.mark.asyncio


async def test_a_paid_out_account_number_is_kept_and_logged_only_as_its_last_four_digits(
    paying_platform: Platform, caplog: pytest.LogCaptureFixture
) -> None:
    platform = paying_platform
    caplog.set_level(logging.DEBUG)
    lines = io.StringIO()
    handler = gofund_log.handler("payments", lines)  # what an operator reads: the services' JSON lines
    logging.getLogger().addHandler(handler)
    # A number of this test's own (10 digits, not starting with the last four) so a hit is ours.
    account_number = "9" + "".join(random.choices("0123456789", k=5)) + "4321"
    try:
        owner = await platform.fresh_user()
        (backer,) = (await platform.users(2))[1:]
        recipient = (
            await platform.payments.CreatePayoutRecipient(
                payments_service_pb2.CreatePayoutRecipientRequest(
                    account_number=account_number, bank_code="058", name="Ada Owner", currency="NGN",
                    idempotency_key=uuid.uuid4().hex,
                ),
                metadata=owner.auth,
            )
        ).recipient  # fmt: skip
        assert recipient.account_number_last4 == "4321"
        goal = await platform.goal(owner, target=4000)
        await paid_contribution(platform, backer, goal, 4000)
        await platform.status(goal.id, goals_pb2.GOAL_STATUS_FUNDED, timeout_s=15)
        await approve_first_proof(platform, owner, backer, goal)
        await platform.status(goal.id, goals_pb2.GOAL_STATUS_RELEASED)
        payout = await eventually(lambda: sent_payout(platform, domain.payout_id(goal.id, 1)), timeout_s=15)
        await settle(platform, "transfers", payout.transfer_code, "success")
        await platform.status(goal.id, goals_pb2.GOAL_STATUS_WITHDRAWN, timeout_s=15)
        # The transfer event was delivered, stored and processed with the number in it.
        assert platform.simulator is not None
        stored = await eventually(lambda: _transfer_events(platform))
        assert any("4321" in json.dumps(doc, default=str) for doc in stored)
    finally:
        logging.getLogger().removeHandler(handler)

    found = [place for place, text in await _everything_stored(platform) if account_number in text]
    assert found == []
    assert account_number not in lines.getvalue()
    assert account_number not in "\n".join(r.getMessage() for r in caplog.records)


async def _transfer_events(platform: Platform) -> list[dict[str, Any]]:
    client, db = payments_db(platform)
    try:
        return [doc async for doc in db.webhook_events.find({"event": "transfer.success", "processed": True})]
    finally:
        await client.close()


async def _everything_stored(platform: Platform) -> list[tuple[str, str]]:
    """(where, its content as text) for every Mongo document and every PostgreSQL row."""
    found: list[tuple[str, str]] = []
    client, db = payments_db(platform)
    try:
        for name in await db.list_collection_names():
            async for doc in db[name].find():
                found.append((f"payments.{name}", json_util.dumps(doc)))
    finally:
        await client.close()
    settings = platform.settings
    for url in (settings.identity_database_url, settings.goals_database_url, settings.ledger_database_url):
        async with await psycopg.AsyncConnection.connect(psycopg_dsn(url), autocommit=True) as connection:
            tables = await connection.execute(
                "SELECT table_schema, table_name FROM information_schema.tables "
                "WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'"
            )
            for schema, table in await tables.fetchall():
                rows = await connection.execute(f'SELECT row_to_json(t)::text FROM "{schema}"."{table}" t')  # noqa: S608
                found.extend((f"{url.rsplit('/', 1)[-1]}.{table}", row[0]) for row in await rows.fetchall())
    return found
