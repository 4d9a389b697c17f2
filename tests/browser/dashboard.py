"""The admin dashboard in a real headless Chromium, driven by Playwright.

Run by tests/e2e_dashboard.rs against the real binary it started and seeded:
  python dashboard.py <chromium> <base url> <approver token> <screenshot dir> <viewer token>
Exits non-zero with the failed step on any failure. Each step checks what an admin sees.
"""

import re
import sys

from playwright.sync_api import expect, sync_playwright

chromium, base, token, shots, viewer = sys.argv[1:6]
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
problems = []


def watch(page):
    # The confirmation dialogs of approve, reject and reverse are accepted.
    page.on("dialog", lambda dialog: dialog.accept())
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    # Chromium logs every 4xx answer as a console error; the page shows those (the 409 is one
    # of the steps). Any other console error is a problem.
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}")
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)


def sign_in(page, jwt=token, who="Signed in as dashboard-admin"):
    page.goto(base + "/admin/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    page.get_by_label("Admin token").fill(jwt)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#who")).to_have_text(who)


def card(page, user):
    return page.locator("article[data-approval]", has_text=f"for {user}")


with sync_playwright() as playwright:
    browser = playwright.chromium.launch(executable_path=chromium, args=ARGS)
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    watch(page)

    # A page without a token asks for one; a token that is not a JWT is refused in the page.
    page.goto(base + "/admin/")
    page.get_by_label("Admin token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("That is not a JWT.")
    page.screenshot(path=f"{shots}/sign-in.png")
    sign_in(page)

    # The approval queue, oldest first, with the user context panel.
    expect(page.get_by_role("heading", name="Approval queue")).to_be_visible()
    expect(card(page, "alice")).to_contain_text("Account 400 days old")
    page.screenshot(path=f"{shots}/approvals.png", full_page=True)
    expect(card(page, "alice").get_by_role("button", name="Approve")).to_be_visible()

    # Dual control: dora's $8,000 waits for a second admin; the queue says who approved first.
    dora = card(page, "dora")
    expect(dora.locator("p.dual")).to_contain_text("1 of 2 approvals")
    expect(dora.locator("p.dual")).to_contain_text("first approved by first-admin")
    expect(dora.locator("p.dual")).to_contain_text("checked the bank account")
    expect(dora.locator("p.dual")).to_contain_text("a different admin must approve")
    expect(card(page, "alice").locator("p.dual")).to_have_count(0)
    dora.screenshot(path=f"{shots}/approval-dual-control.png")

    # The queue pages past its first 100 (105 pending, oldest first).
    expect(page.locator("article[data-approval]")).to_have_count(100)
    page.get_by_role("link", name="Next page").click()
    expect(card(page, "filler-100")).to_be_visible()
    expect(page.locator("article[data-approval]")).to_have_count(5)
    expect(page.get_by_role("link", name="Next page")).to_have_count(0)
    page.get_by_role("link", name="First page").click()
    expect(card(page, "alice")).to_be_visible()
    expect(page.locator("article[data-approval]")).to_have_count(100)

    # A viewer reads every page and is offered no action (the gateway said "viewer").
    looker = browser.new_context(viewport={"width": 1280, "height": 900})
    seen = looker.new_page()
    watch(seen)
    sign_in(seen, viewer, "Signed in as dashboard-viewer (viewer: read only)")
    expect(card(seen, "alice")).to_contain_text("Account 400 days old")
    expect(seen.get_by_role("button", name="Approve")).to_have_count(0)
    expect(seen.get_by_role("button", name="Reject")).to_have_count(0)
    seen.screenshot(path=f"{shots}/approvals-viewer.png", full_page=True)
    seen.goto(base + "/admin/#/webhooks")
    expect(seen.locator("tr", has_text="evt_dashboard_broken")).to_be_visible()
    expect(seen.get_by_role("button", name="Retry")).to_have_count(0)
    expect(seen.get_by_role("button", name="Backfill")).to_have_count(0)
    seen.goto(base + "/admin/#/balance")
    expect(seen.locator("section.card h2")).to_be_visible()
    expect(seen.get_by_role("button", name="Pause transfers")).to_have_count(0)
    seen.goto(base + "/admin/#/alerts")
    expect(seen.locator("article", has_text="Stripe Webhook Event Failed").first).to_be_visible()
    expect(seen.get_by_role("button", name="Resolve")).to_have_count(0)
    looker.close()

    # A rejection without notes is refused in the page, and nothing is sent.
    bob = card(page, "bob")
    bob.get_by_role("button", name="Reject").click()
    expect(bob.get_by_role("alert")).to_have_text("A rejection needs notes saying why.")
    bob.get_by_label("Notes (required to reject)").fill("Unusual pattern, asked the creator to verify")
    bob.get_by_role("button", name="Reject").click()
    expect(bob.get_by_role("status")).to_contain_text("Payout rejected successfully")

    alice = card(page, "alice")
    alice.get_by_role("button", name="Approve").click()
    expect(alice.get_by_role("status")).to_contain_text("Payout approved")
    expect(alice.get_by_role("button", name="Reject")).to_be_hidden()

    # The second admin approves dora's payout: 2 of 2, and the transfer is made.
    dora.get_by_role("button", name="Approve").click()
    expect(dora.get_by_role("status")).to_contain_text("Payout approved and processed successfully")
    expect(dora.locator("p.dual")).to_contain_text("2 of 2 approvals")

    # Two tabs decide the same approval: the second sees who decided it and when (409).
    other = context.new_page()  # a tab of its own: its own sessionStorage, its own sign-in
    watch(other)
    sign_in(other)
    carol_here, carol_there = card(page, "carol"), card(other, "carol")
    expect(carol_there).to_be_visible()
    carol_here.get_by_role("button", name="Approve").click()
    expect(carol_here.get_by_role("status")).to_contain_text("Payout approved")
    carol_there.get_by_role("button", name="Approve").click()
    expect(carol_there.get_by_role("alert")).to_contain_text("Already approved by")
    expect(carol_there.get_by_role("alert")).to_contain_text("dashboard-admin")
    expect(carol_there.get_by_role("button", name="Approve")).to_be_hidden()
    other.screenshot(path=f"{shots}/approval-conflict.png", full_page=True)
    other.close()

    # Payouts: the approved payout with its audit trail and Stripe link.
    page.goto(base + "/admin/#/payouts?userId=alice")
    page.get_by_role("table").get_by_role("link").first.click()
    expect(page.get_by_role("heading", name="Audit log")).to_be_visible()
    expect(page.locator("ol.timeline li")).to_have_count(3)
    expect(page.get_by_role("link", name="tr_")).to_have_attribute("href", "https://dashboard.stripe.com/transfers/" + page.get_by_role("link", name="tr_").inner_text())
    page.screenshot(path=f"{shots}/payout.png", full_page=True)

    # A reversal whose answer is lost (the gateway reversed, the page saw a 502): the outcome is
    # unknown, a different reversal is refused until it is known, and sending again reuses the
    # same Idempotency-Key, so the money is reversed once.
    keys = []

    def lose_first_answer(route):
        keys.append(route.request.headers.get("idempotency-key"))
        answer = route.fetch()
        if len(keys) == 1:
            route.fulfill(status=502, json={"error": "bad gateway"})
        else:
            route.fulfill(response=answer)

    page.route(re.compile(r".*/api/admin/payouts/[^/]+/reverse$"), lose_first_answer)
    page.get_by_label("Reverse (cents)").fill("1000")
    page.get_by_label("Notes").fill("Creator asked to return part")
    page.get_by_role("button", name="Reverse", exact=True).click()
    expect(page.get_by_text("The outcome is unknown")).to_be_visible()
    page.get_by_label("Reverse (cents)").fill("2000")
    page.get_by_role("button", name="Reverse", exact=True).click()
    expect(page.get_by_text("has an unknown outcome: send it again before another")).to_be_visible()
    assert len(keys) == 1, keys
    page.get_by_role("button", name="Send the same request again").first.click()
    expect(page.get_by_text(re.compile(r"^Reversed \("))).to_be_visible()
    assert len(keys) == 2 and keys[0] and keys[0] == keys[1], keys
    page.unroute(re.compile(r".*/api/admin/payouts/[^/]+/reverse$"))
    page.reload()
    expect(page.get_by_role("heading", name="Reversals")).to_be_visible()
    intents = page.locator("ol.timeline").first  # the reversals, before the audit log
    expect(intents.locator("li")).to_have_count(1)
    expect(intents).to_contain_text("Creator asked to return part")

    # Webhooks: a failed event is retried.
    page.goto(base + "/admin/#/webhooks")
    row = page.locator("tr", has_text="evt_dashboard_broken")
    row.get_by_role("button", name="Retry").click()
    expect(row).to_contain_text("Retrying")
    page.screenshot(path=f"{shots}/webhooks.png", full_page=True)

    # Alerts: the parked event's alert is resolved with notes.
    page.goto(base + "/admin/#/alerts")
    alert = page.locator("article", has_text="Stripe Webhook Event Failed").first
    alert.get_by_label("Resolution notes").fill("Malformed test event; retried by hand")
    alert.get_by_role("button", name="Resolve").click()
    expect(alert).to_contain_text("Resolved.")
    page.screenshot(path=f"{shots}/alerts.png", full_page=True)

    # Alerts page past their first 100 (newest first: the oldest seeded alert is on a later
    # page, after the limits flags of the approvals' requests).
    page.goto(base + "/admin/#/alerts?status=all")
    expect(page.locator("article[data-alert]")).to_have_count(100)
    for _ in range(5):
        page.get_by_role("link", name="Next page").click()
        expect(page.locator("article[data-alert]").first).to_be_visible()
        if page.locator("article", has_text="Filler alert 000").count():
            break
    expect(page.locator("article", has_text="Filler alert 000")).to_be_visible()
    page.get_by_role("link", name="First page").click()
    expect(page.locator("article[data-alert]")).to_have_count(100)

    # The level filter asks the gateway for ?level=1 and shows only level-1 alerts, with the
    # signal that set the level (limits flags); level 2 shows the critical ones.
    with page.expect_request(lambda r: "/api/admin/alerts?" in r.url and "level=1" in r.url):
        page.get_by_label("Level").select_option("1")
    expect(page).to_have_url(re.compile(r"level=1"))
    expect(page.locator("article[data-alert][data-level='1']").first).to_be_visible()
    expect(page.locator("article[data-alert]:not([data-level='1'])")).to_have_count(0)
    flagged = page.locator("article[data-alert]").first  # the newest: a request's limits flag
    expect(flagged).to_contain_text("Level 1")
    expect(flagged).to_contain_text("signal limits_flag")
    page.screenshot(path=f"{shots}/alerts-level.png", full_page=True)
    page.get_by_label("Level").select_option("2")
    expect(page).to_have_url(re.compile(r"level=2"))
    expect(page.locator("article[data-alert][data-level='2']").first).to_be_visible()
    expect(page.locator("article[data-alert]:not([data-level='2'])")).to_have_count(0)
    page.get_by_label("Level").select_option("")
    expect(page).not_to_have_url(re.compile(r"level="))
    expect(page.locator("article[data-alert][data-level='1']").first).to_be_visible()
    expect(page.locator("article[data-alert][data-level='2']").first).to_be_visible()

    # Balance: the status card and the chart of snapshots with the reserve line.
    page.goto(base + "/admin/#/balance")
    expect(page.get_by_role("img", name="Available balance and required reserve over the last snapshots")).to_be_visible()
    expect(page.locator("circle.balance-point")).to_have_count(2)
    expect(page.locator("path.reserve-line")).to_have_count(1)
    expect(page.locator("section.card h2")).to_have_text(re.compile("^(HEALTHY|WARNING|CRITICAL|DEPLETED)$"))
    page.screenshot(path=f"{shots}/balance.png", full_page=True)

    # Reconciliation: a run from the page.
    page.goto(base + "/admin/#/reconciliation")
    page.get_by_role("button", name="Run a reconciliation now").click()
    expect(page.locator("article").first).to_contain_text("admin:dashboard-admin")
    page.screenshot(path=f"{shots}/reconciliation.png", full_page=True)

    # A transfer halt (here an escalation's reason) shows on every page until it is lifted.
    halted = page.request.post(base + "/api/admin/balance/pause", headers={"Authorization": "Bearer " + token},
                               data={"reason": "escalation: alert_dashboard_burst"})
    assert halted.ok, halted.text()
    for where in ["approvals", "alerts", "payouts", "webhooks", "reconciliation", "balance"]:
        page.goto(base + "/admin/#/" + where)
        banner = page.locator("#halt")
        expect(banner).to_be_visible()
        expect(banner).to_contain_text("Payout transfers are halted (manual): escalation: alert_dashboard_burst")
        expect(banner.get_by_role("link", name="alert alert_dashboard_burst")).to_be_visible()
    page.screenshot(path=f"{shots}/halt.png", full_page=True)
    page.get_by_role("button", name="Resume transfers").click()
    expect(page.locator("#halt")).to_be_hidden()
    page.goto(base + "/admin/#/approvals")
    expect(page.locator("#halt")).to_be_hidden()

    # Phone width: the queue still reads.
    phone = browser.new_context(viewport={"width": 390, "height": 844})
    small = phone.new_page()
    watch(small)
    sign_in(small)
    small.goto(base + "/admin/#/payouts")
    expect(small.get_by_role("table")).to_be_visible()
    small.screenshot(path=f"{shots}/payouts-phone.png", full_page=True)

    # Signing out forgets the token.
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    assert page.evaluate("sessionStorage.length") == 0, "the token outlived the sign-out"
    browser.close()

if problems:
    print("\n".join(problems))
    sys.exit(1)
print("dashboard: every step as expected")
