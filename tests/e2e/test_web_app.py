"""The web app as people use it: Debian's Chromium, driven by Playwright, on the app Envoy serves at `/`.

Everything happens by clicking and typing in the page, as a person would: no API
call is made for the people in these stories. The only things read outside the
browser are what a person reads elsewhere (the verification code in the mail sink).

These tests run on a stack of their own: the shared stack's login and registration
bucket at the edge is drained on purpose by other tests (and fuzzed by the OpenAPI
run), and a person registering in the browser must not meet their 429s; and here
Paystack settles transfers by itself, as it does for real, rather than by a test's hand.

`GOFUND_WEB_SCREENSHOT=docs/goal-page.png` also saves the goal page with its progress
there (the README's picture); a failing test saves the page it failed on in the
basetemp directory and prints the path.
"""

from __future__ import annotations

import json
import os
import re
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, expect, sync_playwright

from services.stack.stack import Stack
from tests.e2e.conftest import edge, stack_environment
from tests.helpers import eventually_sync

CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "correct horse battery"
# Webhooks, sagas and the payout settle within seconds on the test stack; this bounds a wait, never sleeps.
SETTLED_MS = 60_000
SCREENSHOT = os.environ.get("GOFUND_WEB_SCREENSHOT")


@pytest.fixture(scope="module")
def web_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from tests.e2e.money import reconciled_clean

    overrides = stack_environment(tmp_path_factory.mktemp("web-stack"))
    # Transfers settle on their own, as Paystack's do (the shared stack settles them by hand).
    overrides["GOFUND_PAYSTACK_SIM_SETTLE_MS"] = "500"
    platform = Stack(overrides, durable=False)
    platform.start()
    try:
        yield platform
        reconciled_clean(platform)
    finally:
        platform.stop()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    # Debian's Chromium, never a downloaded build (`playwright install` is not run anywhere).
    assert CHROMIUM.exists(), f"{CHROMIUM} is missing: apt-get install -y chromium (.ci/run does)"
    launched = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True)
    yield launched
    launched.close()


class People:
    """One browser context (its own storage, so its own signed-in person) per person in a story."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.contexts: list[BrowserContext] = []

    def new(self, width: int = 1100) -> Page:
        # Reduced motion: the progress bar is drawn where it ends, not mid-animation, in screenshots.
        context = self.browser.new_context(viewport={"width": width, "height": 900}, reduced_motion="reduce")
        context.set_default_timeout(15_000)
        self.contexts.append(context)
        return context.new_page()


@pytest.fixture
def people(
    browser: Browser, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[People]:
    crowd = People(browser)
    failed_before = request.session.testsfailed
    yield crowd
    if request.session.testsfailed > failed_before:
        # The call phase failed (its report is logged before fixtures are torn down): keep every page.
        directory = tmp_path_factory.getbasetemp() / "screenshots"
        directory.mkdir(exist_ok=True)
        for i, context in enumerate(crowd.contexts):
            for j, page in enumerate(context.pages):
                path = directory / f"{request.node.name}-{i}-{j}.png"
                page.screenshot(path=str(path), full_page=True)
                print(f"screenshot of {page.url}: {path}", file=sys.stderr)
    for context in crowd.contexts:
        context.close()


def register(page: Page, stack: Stack) -> dict[str, str]:
    name = "w" + uuid.uuid4().hex[:12]
    page.goto(f"{edge(stack)}/#/register")
    page.get_by_label("Email", exact=True).fill(f"{name}@example.com")
    page.get_by_label("Username").fill(name)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Create account").click()
    expect(page.get_by_role("heading", name="Your account")).to_be_visible()
    return {"username": name, "email": f"{name}@example.com"}


def mailed_code(stack: Stack, email: str) -> str:
    """The newest verification code the mail sink holds for `email` (what the person reads in their inbox)."""

    def latest() -> str | None:
        mail = stack.data_dir / "mail.jsonl"
        if not mail.exists():
            return None
        mails = [json.loads(line) for line in mail.read_text().splitlines()]
        found = [m for m in mails if m["to"] == email]
        match = re.search(r"\b(\d{6})\b", found[-1]["body"]) if found else None
        return match.group(1) if match else None

    return eventually_sync(latest, what=f"a code mailed to {email}")


def log_in(page: Page, stack: Stack, login: str) -> None:
    page.goto(f"{edge(stack)}/#/login")
    page.get_by_label("Email or username").fill(login)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("account-link")).to_have_text(login)


def start_goal(page: Page, title: str, target: str) -> str:
    """The owner starts a goal in NGN; its page's URL."""
    page.get_by_role("link", name="New goal").click()
    page.get_by_label("Title", exact=True).fill(title)
    page.get_by_label("Target amount").fill(target)
    page.get_by_label("Currency").select_option("NGN")
    page.get_by_role("button", name="Create goal").click()
    expect(page.get_by_role("heading", name=title)).to_be_visible()
    return page.url


def pay_at_checkout(page: Page, stack: Stack, goal_url: str, amount: str) -> None:
    """A contributor on the goal's page pays `amount` at Paystack's checkout and is back on the goal, paid."""
    page.get_by_label("Amount (NGN)").fill(amount)
    page.get_by_role("button", name="Contribute").click()
    page.wait_for_url(f"{stack.settings.paystack_url}/checkout/**")
    page.get_by_role("button", name="Pay").click()
    page.wait_for_url(goal_url)
    expect(page.locator("[data-contribution] [data-status]")).to_have_text("Paid", timeout=SETTLED_MS)


def goal_id_of(page: Page) -> str:
    match = re.search(r"#/goals/([0-9a-f-]{36})", page.url)
    assert match, page.url
    return match.group(1)


def test_a_goal_is_funded_through_checkout_approved_and_paid_out_as_people_click_it(
    web_stack: Stack, people: People
) -> None:
    stack = web_stack
    # The owner registers, verifies their email with the mailed code, and starts a goal.
    owner_page = people.new()
    owner = register(owner_page, stack)
    owner_page.get_by_role("button", name="Email me a code").click()
    owner_page.get_by_label("Code from the email").fill(mailed_code(stack, owner["email"]))
    owner_page.get_by_role("button", name="Verify").click()
    expect(owner_page.get_by_test_id("email-verified")).to_have_text("verified")

    owner_page.get_by_role("link", name="New goal").click()
    owner_page.get_by_label("Title", exact=True).fill("Borehole for Oke-Ado")
    owner_page.get_by_label("What the money is for").fill("A borehole and a pump for the primary school.")
    owner_page.get_by_label("Target amount").fill("5000")
    owner_page.get_by_label("Currency").select_option("NGN")
    owner_page.get_by_role("button", name="Create goal").click()
    expect(owner_page.get_by_role("heading", name="Borehole for Oke-Ado")).to_be_visible()
    goal_url = owner_page.url
    goal_id = goal_id_of(owner_page)
    expect(owner_page.get_by_test_id("raised")).to_have_text("NGN 0.00")
    expect(owner_page.get_by_text("Live")).to_be_visible()
    # Marks this document: still there later means the page was never reloaded.
    owner_page.evaluate("window.stillTheSamePage = true")

    # A contributor registers, finds the goal among the open ones, and pays at Paystack's checkout.
    payer_page = people.new(width=390)  # a phone
    payer = register(payer_page, stack)
    payer_page.get_by_role("link", name="Goals", exact=True).click()
    payer_page.get_by_label("Show").select_option("GOAL_STATUS_OPEN")
    payer_page.get_by_role("link", name="Borehole for Oke-Ado").first.click()
    payer_page.wait_for_url(goal_url)
    payer_page.get_by_label("Amount (NGN)").fill("5000")
    payer_page.get_by_role("button", name="Contribute").click()
    payer_page.wait_for_url(f"{stack.settings.paystack_url}/checkout/**")
    expect(payer_page.locator(".amount")).to_have_text("NGN 5,000.00")
    payer_page.get_by_role("button", name="Pay").click()
    # Back in the app: the return page verified the payment and went back to the goal.
    payer_page.wait_for_url(goal_url)
    expect(payer_page.get_by_role("status").filter(has_text="is confirmed")).to_be_visible()
    expect(payer_page.locator("[data-contribution] [data-status]")).to_have_text("Paid", timeout=SETTLED_MS)

    # The owner, who never reloaded, sees the progress move.
    expect(owner_page.get_by_test_id("raised")).to_have_text("NGN 5,000.00", timeout=SETTLED_MS)
    expect(owner_page.get_by_test_id("contributors")).to_have_text("1")
    expect(owner_page.locator(".goal > header [data-status]")).to_have_attribute("data-status", "GOAL_STATUS_FUNDED")
    assert owner_page.evaluate("window.stillTheSamePage") is True
    if SCREENSHOT:
        owner_page.screenshot(path=SCREENSHOT)

    # The owner adds a payout account: a bank of the goal's currency, the bank's name for the account shown back.
    owner_page.get_by_role("link", name="payout account", exact=True).click()
    bank = owner_page.get_by_label("Bank")
    expect(bank.locator("option").nth(1)).to_be_attached()
    bank.select_option(index=1)
    owner_page.get_by_label("Account number").fill("0123456789")
    owner_page.get_by_label("Account holder's name").fill("Ada Obi")
    owner_page.get_by_role("button", name="Save payout account").click()
    expect(owner_page.get_by_test_id("resolved-name")).not_to_be_empty()

    # The owner submits proof with media links.
    owner_page.goto(goal_url)
    owner_page.get_by_label("Proof title").fill("The borehole is in")
    owner_page.get_by_label("What was done").fill("Drilled to 60 m; the pump runs on solar.")
    owner_page.get_by_label("Media links").fill("https://example.com/borehole.jpg\nhttps://example.com/pump.mp4")
    owner_page.get_by_role("button", name="Submit proof").click()
    proof = owner_page.locator("[data-proof]")
    expect(proof.locator("[data-status]")).to_have_text("Voting")
    expect(proof.get_by_role("link", name="https://example.com/pump.mp4")).to_be_visible()

    # The contributor sees the proof appear on the open goal page, votes to approve, and sees the tally.
    payer_proof = payer_page.locator("[data-proof]")
    expect(payer_proof.get_by_role("heading", name=re.compile("The borehole is in"))).to_be_visible(timeout=SETTLED_MS)
    payer_proof.get_by_role("button", name="Approve").click()
    expect(payer_proof.get_by_text("your vote is counted")).to_be_visible()
    expect(payer_proof.get_by_test_id("tally")).to_contain_text("Approve NGN 5,000.00")
    expect(payer_proof.locator("[data-status]")).to_have_text("Approved")

    # Released and paid out: both see it without reloading.
    for page in (owner_page, payer_page):
        header_status = page.locator(".goal > header [data-status]")
        expect(header_status).to_have_attribute("data-status", "GOAL_STATUS_WITHDRAWN", timeout=SETTLED_MS)
        expect(header_status).to_have_text("Paid out")
        expect(page.get_by_test_id("progress")).to_contain_text("paid out to the owner")
    expect(owner_page.locator("[data-proof] [data-status]")).to_have_text("Approved")

    # On another browser (nothing stored from the payment), the contributor's list comes from the API:
    # the contribution, paid, on the paid-out goal, which it links to.
    laptop = people.new()
    log_in(laptop, stack, payer["username"])
    laptop.get_by_role("link", name="My contributions").click()
    row = laptop.locator("[data-contribution]")
    expect(row).to_have_count(1)
    expect(row.get_by_role("link", name="Borehole for Oke-Ado")).to_have_attribute("href", f"#/goals/{goal_id}")
    expect(row.locator('[data-status^="CONTRIBUTION_STATUS_"]')).to_have_text("Paid")
    expect(row.locator('[data-status^="GOAL_STATUS_"]')).to_have_text("Paid out")
    expect(row).to_contain_text("NGN 5,000.00")
    laptop.get_by_label("Show").select_option("CONTRIBUTION_STATUS_REFUNDED")
    expect(laptop.get_by_text("No contributions in this status.")).to_be_visible()
    expect(row).to_have_count(0)


def test_the_owner_edits_then_cancels_a_goal_which_ends_refunded_in_the_list(web_stack: Stack, people: People) -> None:
    page = people.new()
    register(page, web_stack)
    title = f"Library books {uuid.uuid4().hex[:6]}"
    page.get_by_role("link", name="New goal").click()
    page.get_by_label("Title", exact=True).fill("Library bokos")
    page.get_by_label("Target amount").fill("not money")
    page.get_by_role("button", name="Create goal").click()
    expect(page.get_by_role("alert")).to_contain_text("Enter the target as an amount")
    page.get_by_label("Target amount").fill("120000.50")
    page.get_by_role("button", name="Create goal").click()
    expect(page.get_by_role("heading", name="Library bokos")).to_be_visible()
    expect(page.get_by_test_id("progress")).to_contain_text("of NGN 120,000.50")

    page.get_by_role("button", name="Edit title and description").click()
    page.get_by_label("Title", exact=True).fill(title)
    page.get_by_label("Description", exact=True).fill("Two hundred books for the reading room.")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name=title, exact=True)).to_be_visible()
    expect(page.get_by_text("Two hundred books for the reading room.")).to_be_visible()

    page.get_by_role("button", name="Cancel this goal…").click()
    page.get_by_label("Why (shown on the goal)").fill("The school found a donor.")
    page.get_by_role("button", name="Cancel goal and refund").click()
    # Cancelled, then refunded: with nothing to pay back, at once.
    expect(page.locator(".goal > header [data-status]")).to_have_text("Refunded", timeout=SETTLED_MS)
    expect(page.get_by_text("cancelled: The school found a donor.")).to_be_visible()

    page.get_by_role("link", name="Goals", exact=True).click()
    page.get_by_label("Show").select_option("GOAL_STATUS_REFUNDED")
    expect(page.get_by_role("link", name=title)).to_be_visible()
    page.get_by_label("Show").select_option("GOAL_STATUS_OPEN")
    expect(page.get_by_role("heading", name="Goals")).to_be_visible()
    expect(page.get_by_role("link", name=title)).to_have_count(0)


def test_a_contributor_finds_their_refund_under_my_contributions_after_the_owner_cancels(
    web_stack: Stack, people: People
) -> None:
    owner_page = people.new()
    register(owner_page, web_stack)
    title = f"Football kits {uuid.uuid4().hex[:6]}"
    goal_url = start_goal(owner_page, title, "9000")
    payer_page = people.new(width=390)
    register(payer_page, web_stack)
    payer_page.goto(goal_url)
    pay_at_checkout(payer_page, web_stack, goal_url, "2000")

    owner_page.get_by_role("button", name="Cancel this goal…").click()
    owner_page.get_by_label("Why (shown on the goal)").fill("The league was called off.")
    owner_page.get_by_role("button", name="Cancel goal and refund").click()
    # Paystack settles the refund by itself; then the goal is refunded.
    expect(owner_page.locator(".goal > header [data-status]")).to_have_text("Refunded", timeout=SETTLED_MS)

    payer_page.get_by_role("link", name="My contributions").click()
    row = payer_page.locator("[data-contribution]")
    expect(row).to_have_count(1)
    expect(row.get_by_role("link", name=title)).to_be_visible()
    expect(row.locator('[data-status^="CONTRIBUTION_STATUS_"]')).to_have_text("Refunded")
    expect(row.locator('[data-status^="GOAL_STATUS_"]')).to_have_text("Refunded")
    payer_page.get_by_label("Show").select_option("CONTRIBUTION_STATUS_SUCCEEDED")
    expect(payer_page.get_by_text("No contributions in this status.")).to_be_visible()
    payer_page.get_by_label("Show").select_option("CONTRIBUTION_STATUS_REFUNDED")
    expect(row).to_have_count(1)
    row.get_by_role("link", name=title).click()
    payer_page.wait_for_url(goal_url)
    expect(payer_page.get_by_text("cancelled: The league was called off.")).to_be_visible()


def test_a_person_logs_in_on_two_browsers_revokes_the_other_and_logs_out(web_stack: Stack, people: People) -> None:
    laptop = people.new()
    person = register(laptop, web_stack)
    phone = people.new(width=390)
    phone.goto(f"{edge(web_stack)}/#/login")
    phone.get_by_label("Email or username").fill(person["username"])
    phone.get_by_label("Password").fill("not the password")
    phone.get_by_role("button", name="Log in").click()
    expect(phone.get_by_role("alert")).to_have_text("That login and password do not match an account.")
    phone.get_by_label("Password").fill(PASSWORD)
    phone.get_by_role("button", name="Log in").click()
    expect(phone.get_by_test_id("account-link")).to_have_text(person["username"])

    laptop.reload()
    sessions = laptop.locator("[data-session]")
    expect(sessions).to_have_count(2)
    other = sessions.filter(has_not_text="this browser")
    other.get_by_role("button", name="Revoke").click()
    expect(sessions).to_have_count(1)

    # The phone's session is gone: its next call signs it out.
    phone.get_by_test_id("account-link").click()
    expect(phone.get_by_role("navigation").get_by_role("link", name="Log in")).to_be_visible()

    laptop.get_by_role("button", name="Log out", exact=True).click()
    expect(laptop.get_by_role("navigation").get_by_role("link", name="Log in")).to_be_visible()
    laptop.goto(f"{edge(web_stack)}/#/account")
    expect(laptop.get_by_text("to see your account")).to_be_visible()
