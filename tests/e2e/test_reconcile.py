"""Reconciliation as operators use it: `gofund reconcile`, the admin route, and the
scheduled run's metrics, on a stack of this module's own (it plants drift, which the
shared stack must never show)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from services.common.server import METRICS_PORT_OFFSET
from services.payments.domain import capture_transaction_id
from services.stack.stack import Stack
from tests.e2e.conftest import stack_environment
from tests.e2e.money import (
    api,
    balance,
    contribute,
    contributed,
    make_admin,
    new_user,
    open_goal,
    pay,
    payment,
    reconcile,
    reconciled_clean,
    transaction,
)
from tests.helpers import eventually_sync, reason_of


@pytest.fixture(scope="module")
def audited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    overrides = stack_environment(tmp_path_factory.mktemp("reconcile"))
    overrides["GOFUND_RECONCILE_INTERVAL_MS"] = "300"
    platform = Stack(overrides, durable=False)
    platform.start()
    yield platform
    platform.stop()


def drift_gauge(stack: Stack, kind: str) -> float:
    port = stack.settings.payments_port + METRICS_PORT_OFFSET
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    for line in text.splitlines():
        if line.startswith(f'gofund_reconciliation_drifts{{kind="{kind}"}}'):
            return float(line.split()[-1])
    return -1.0


def test_a_settled_platform_reconciles_clean_by_command_and_admin_route(audited: Stack) -> None:
    owner, payer, operator, member = (new_user(audited) for _ in range(4))
    goal = open_goal(audited, owner, target=100_000)
    contributed(audited, payer, goal, 12_000)
    report = reconciled_clean(audited)
    assert "no drift" in report
    make_admin(audited, operator)
    clean = eventually_sync(
        lambda: (r := api(audited, "GET", "/v1/reconciliation", operator)).status_code == 200 and r.json(),
        what="the admin role to reach the payments service's cache",
    )
    assert clean["reconciliation"]["drifts"] == []
    assert int(clean["reconciliation"]["goals_checked"]) >= 1
    denied = api(audited, "GET", "/v1/reconciliation", member)
    assert (denied.status_code, reason_of(denied)) == (403, "MISSING_PERMISSION")


def test_a_charge_paystack_captured_for_another_amount_is_flagged_and_named_by_reconciliation(audited: Stack) -> None:
    owner, payer, operator = new_user(audited), new_user(audited), new_user(audited)
    goal = open_goal(audited, owner, target=1_000_000)
    started = contribute(audited, payer, goal, 30_000)
    payment_id = started["contribution"]["payment_id"]
    pay(started["authorization_url"], amount=3_000)  # Paystack captured a tenth of it
    flagged = eventually_sync(lambda: (p := payment(audited, payer, payment_id))["flagged"] and p, what="the flag")
    assert flagged["status"] == "PAYMENT_STATUS_PENDING"
    assert "3000" in flagged["flag_reason"]
    assert transaction(audited, capture_transaction_id(payment_id)) is None
    assert balance(audited, goal["account_id"]) == 0

    report = reconcile(audited)
    assert report.returncode == 1, report.stdout + report.stderr
    ours = [line for line in report.stdout.splitlines() if payment_id in line]
    assert any(line.strip().startswith("CHARGE_NOT_CAPTURED") for line in ours), report.stdout
    assert any(line.strip().startswith("NEEDS_OPERATOR") for line in ours), report.stdout
    make_admin(audited, operator)
    listed = eventually_sync(
        lambda: (r := api(audited, "GET", "/v1/reconciliation", operator)).status_code == 200 and r.json(),
        what="the admin role to reach the payments service's cache",
    )
    kinds = {d["kind"] for d in ok_drifts(listed) if d["ids"].get("payment_id") == payment_id}
    assert {"DRIFT_KIND_CHARGE_NOT_CAPTURED", "DRIFT_KIND_NEEDS_OPERATOR"} <= kinds
    # The scheduled run: two runs in a row found it, so the platform's metrics count it.
    eventually_sync(lambda: drift_gauge(audited, "NEEDS_OPERATOR") >= 1, what="the scheduled run's drift gauge")
    assert drift_gauge(audited, "CHARGE_NOT_CAPTURED") >= 1


def ok_drifts(listed: dict[str, Any]) -> list[dict[str, Any]]:
    drifts: list[dict[str, Any]] = listed["reconciliation"]["drifts"]
    return drifts
