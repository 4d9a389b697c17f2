//! The behaviour every `AllocationRepository` must have, run against the embedded store and
//! against MongoDB (the test server, or the one `MONGODB_URI` names).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use payouts_runtime::store::store_precision;
use payouts_runtime::{Clock as _, ErrorKind, Money};

use super::*;
use crate::domain::AllocationStatus;

fn at(minute: i64) -> DateTime<Utc> {
    store_precision(Utc::now()) + Duration::minutes(minute)
}

fn credit(id: &str, user_id: &str, cents: i64, minute: i64) -> Allocation {
    Allocation::credit(id, user_id, "ch_1", "payer", Money::usd(cents), at(minute)).unwrap()
}

async fn run(repository: Arc<dyn AllocationRepository>) {
    a_retried_credit_is_stored_once(repository.as_ref()).await;
    a_different_credit_under_a_used_id_is_refused(repository.as_ref()).await;
    concurrent_credits_of_one_id_store_one(Arc::clone(&repository)).await;
    lists_a_creators_allocations_newest_first(repository.as_ref()).await;
}

async fn a_retried_credit_is_stored_once(repository: &dyn AllocationRepository) {
    let first = credit("alloc_retry", "u-retry", 500, 1);
    assert_eq!(
        repository.record(&first).await.unwrap(),
        (first.clone(), true)
    );
    let retried = credit("alloc_retry", "u-retry", 500, 2);
    assert_eq!(
        repository.record(&retried).await.unwrap(),
        (first.clone(), false)
    );
    assert_eq!(repository.get("alloc_retry").await.unwrap(), Some(first));
}

async fn a_different_credit_under_a_used_id_is_refused(repository: &dyn AllocationRepository) {
    repository
        .record(&credit("alloc_diff", "u-diff", 500, 1))
        .await
        .unwrap();
    let error = repository
        .record(&credit("alloc_diff", "u-diff", 501, 1))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::AlreadyExists);
    assert_eq!(
        repository
            .get("alloc_diff")
            .await
            .unwrap()
            .map(|a| a.amount.cents),
        Some(500)
    );
}

async fn concurrent_credits_of_one_id_store_one(repository: Arc<dyn AllocationRepository>) {
    let writers = (0..20).map(|_| {
        let repository = Arc::clone(&repository);
        tokio::spawn(async move {
            repository
                .record(&credit("alloc_race", "u-race", 700, 1))
                .await
        })
    });
    let mut created = 0;
    for writer in writers {
        if writer.await.unwrap().unwrap().1 {
            created += 1;
        }
    }
    assert_eq!(created, 1);
    assert_eq!(
        repository
            .list_by_user("u-race", None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn lists_a_creators_allocations_newest_first(repository: &dyn AllocationRepository) {
    let old = credit("alloc_l1", "u-list", 100, 1);
    let new = credit("alloc_l2", "u-list", 200, 2);
    repository.record(&old).await.unwrap();
    repository.record(&new).await.unwrap();
    repository
        .record(&credit("alloc_l3", "u-other", 300, 3))
        .await
        .unwrap();
    assert_eq!(
        repository.list_by_user("u-list", None, 10).await.unwrap(),
        vec![new.clone(), old.clone()]
    );
    assert_eq!(
        repository.list_by_user("u-list", None, 1).await.unwrap(),
        vec![new.clone()]
    );
    let cursor = Some((new.created_at, new.id.clone()));
    assert_eq!(
        repository.list_by_user("u-list", cursor, 10).await.unwrap(),
        vec![old]
    );
}

/// The ledger on the two repositories: the books' running totals stay exactly what the
/// allocations add up to, whatever interleaves and wherever a writer stops.
async fn run_ledger(
    allocations: Arc<dyn AllocationRepository>,
    books: Arc<dyn EarningsBookRepository>,
) {
    let clock = payouts_runtime::clock::ManualClock::new(at(0));
    let ledger = Arc::new(crate::earnings::Ledger {
        allocations,
        books,
        clock: Arc::new(clock.clone()),
    });
    the_totals_are_what_the_allocations_add_up_to(Arc::clone(&ledger)).await;
    an_intent_left_by_a_stopped_writer_is_finished(&ledger, &clock).await;
    an_intent_whose_id_another_credit_holds_is_taken_back(&ledger).await;
    books_are_listed_by_creator_in_pages(&*ledger.books).await;
}

async fn books_are_listed_by_creator_in_pages(books: &dyn EarningsBookRepository) {
    for user in ["list-c", "list-a", "list-b"] {
        books.put(&EarningsBook::empty(user), 0).await.unwrap();
    }
    let ids = |page: Vec<EarningsBook>| page.into_iter().map(|b| b.user_id).collect::<Vec<_>>();
    assert_eq!(
        ids(books.list(Some("list-"), 2).await.unwrap()),
        ["list-a", "list-b"]
    );
    let next = ids(books.list(Some("list-b"), 1).await.unwrap());
    assert_eq!(next, ["list-c"]);
    let all = ids(books.list(None, usize::MAX).await.unwrap());
    let mut sorted = all.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(all, sorted, "every creator once, by id");
    assert!(all.len() >= 3);
}

/// Rebuilds a creator's earnings from their allocations and compares with their book.
async fn assert_exact(ledger: &crate::earnings::Ledger, user_id: &str) {
    let usd = payouts_runtime::Currency::usd();
    let allocations = ledger
        .allocations
        .list_by_user(user_id, None, usize::MAX)
        .await
        .unwrap();
    let book = ledger.books.get(user_id).await.unwrap();
    assert!(book.pending.is_empty(), "{book:?}");
    assert_eq!(
        book.earnings(&usd),
        crate::domain::Earnings::of(&allocations, &usd),
        "{user_id}"
    );
    assert_eq!(
        book.totals.get(&usd).map_or(0, |t| t.allocations),
        i64::try_from(allocations.len()).unwrap()
    );
}

async fn the_totals_are_what_the_allocations_add_up_to(ledger: Arc<crate::earnings::Ledger>) {
    // Three creators credited at once; every credit sent twice; one id claimed by two
    // creators (one of them must be refused).
    let mut credits = Vec::new();
    for i in 0..30 {
        let user = format!("u-book-{}", i % 3);
        credits.push(credit(&format!("alloc_book_{i}"), &user, 100 + i, 1));
    }
    credits.push(credit("alloc_book_0", "u-book-1", 999, 1));
    let writers: Vec<_> = credits
        .iter()
        .chain(credits.iter())
        .cloned()
        .map(|allocation| {
            let ledger = Arc::clone(&ledger);
            tokio::spawn(async move { ledger.record(&allocation).await })
        })
        .collect();
    let mut created = 0;
    let mut refused = 0;
    for writer in writers {
        match writer.await.unwrap() {
            Ok((_, true)) => created += 1,
            Ok((_, false)) => {}
            Err(error) => {
                assert_eq!(error.kind(), ErrorKind::AlreadyExists);
                refused += 1;
            }
        }
    }
    assert_eq!(created, 30);
    assert!(refused >= 2, "the second claim of alloc_book_0, twice");
    for user in ["u-book-0", "u-book-1", "u-book-2"] {
        assert_exact(&ledger, user).await;
    }
    // Whichever creator's credit was stored first holds the id; the other's is not counted.
    let usd = payouts_runtime::Currency::usd();
    let holder = ledger
        .allocations
        .get("alloc_book_0")
        .await
        .unwrap()
        .unwrap()
        .user_id;
    let own: i64 = (1..30).filter(|i| i % 3 == 0).map(|i| 100 + i).sum();
    let expected = if holder == "u-book-0" { own + 100 } else { own };
    assert_eq!(
        ledger.earnings("u-book-0", &usd).await.unwrap().lifetime,
        Money::usd(expected)
    );
}

async fn an_intent_left_by_a_stopped_writer_is_finished(
    ledger: &crate::earnings::Ledger,
    clock: &payouts_runtime::clock::ManualClock,
) {
    let usd = payouts_runtime::Currency::usd();
    // Credited at the ledger's clock, so that moving it makes them stale.
    let credit = |id: &str, cents: i64| {
        Allocation::credit(
            id,
            "u-stop",
            "ch_1",
            "payer",
            Money::usd(cents),
            clock.now(),
        )
        .unwrap()
    };
    let first = credit("alloc_stop_1", 300);
    ledger.record(&first).await.unwrap();
    // A writer counted a credit in the book and stopped before storing the allocation.
    let stopped = credit("alloc_stop_2", 700);
    let book = ledger.books.get("u-stop").await.unwrap();
    ledger
        .books
        .put(&book.with_credit(&stopped), book.version)
        .await
        .unwrap();
    // Not stored yet: not reported.
    assert_eq!(
        ledger.earnings("u-stop", &usd).await.unwrap().lifetime,
        Money::usd(300)
    );
    // Once stale, a read finishes it.
    clock.advance(crate::earnings::STALE_INTENT + Duration::seconds(1));
    assert_eq!(
        ledger.earnings("u-stop", &usd).await.unwrap().lifetime,
        Money::usd(1_000)
    );
    assert_eq!(
        ledger.allocations.get("alloc_stop_2").await.unwrap(),
        Some(stopped.clone())
    );
    assert_exact(ledger, "u-stop").await;
    // The caller's retry finds it stored.
    assert_eq!(
        ledger.record(&stopped).await.unwrap(),
        (stopped.clone(), false)
    );
    // A writer that stops again is finished by the creator's next credit.
    let book = ledger.books.get("u-stop").await.unwrap();
    let stopped_again = credit("alloc_stop_3", 50);
    ledger
        .books
        .put(&book.with_credit(&stopped_again), book.version)
        .await
        .unwrap();
    ledger.record(&credit("alloc_stop_4", 5)).await.unwrap();
    assert_exact(ledger, "u-stop").await;
    assert_eq!(
        ledger.earnings("u-stop", &usd).await.unwrap().lifetime,
        Money::usd(1_055)
    );
}

async fn an_intent_whose_id_another_credit_holds_is_taken_back(ledger: &crate::earnings::Ledger) {
    let usd = payouts_runtime::Currency::usd();
    ledger
        .record(&credit("alloc_taken", "u-owner", 400, 0))
        .await
        .unwrap();
    // Another creator's writer counted a credit under the same id, then stopped.
    let clash = credit("alloc_taken", "u-clash", 900, 0);
    let book = ledger.books.get("u-clash").await.unwrap();
    ledger
        .books
        .put(&book.with_credit(&clash), book.version)
        .await
        .unwrap();
    ledger
        .record(&credit("alloc_clash_ok", "u-clash", 10, 0))
        .await
        .unwrap();
    assert_exact(ledger, "u-clash").await;
    assert_eq!(
        ledger.earnings("u-clash", &usd).await.unwrap().lifetime,
        Money::usd(10)
    );
    assert_eq!(
        ledger
            .allocations
            .get("alloc_taken")
            .await
            .unwrap()
            .map(|a| a.user_id),
        Some("u-owner".to_owned())
    );
}

/// Alerts and notifications as the notifications service would keep them: by key.
#[derive(Default)]
struct Notices {
    sent: std::sync::Mutex<Vec<(Option<String>, crate::ports::Message)>>,
    failing: std::sync::atomic::AtomicBool,
}

impl Notices {
    fn sent(&self) -> Vec<(Option<String>, crate::ports::Message)> {
        self.sent.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl crate::ports::NoticesPort for Notices {
    async fn alert(&self, message: &crate::ports::Message) -> Result<(), ServiceError> {
        self.notify(None, message)
    }

    async fn notify_user(
        &self,
        user_id: &str,
        message: &crate::ports::Message,
    ) -> Result<(), ServiceError> {
        self.notify(Some(user_id.to_owned()), message)
    }
}

impl Notices {
    fn notify(
        &self,
        user: Option<String>,
        message: &crate::ports::Message,
    ) -> Result<(), ServiceError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(ServiceError::unavailable(
                "notifications down",
                anyhow::anyhow!("test"),
            ));
        }
        let mut sent = self.sent.lock().unwrap();
        if !sent.iter().any(|(_, known)| known.key == message.key) {
            sent.push((user, message.clone()));
        }
        Ok(())
    }
}

/// A book repository that keeps every state a concurrent reader could have read: each book
/// as written, in order (what `GetEarnings` and `ListPayableEarnings` report from it).
struct WatchedBooks {
    inner: Arc<dyn EarningsBookRepository>,
    written: std::sync::Mutex<Vec<EarningsBook>>,
}

impl WatchedBooks {
    /// Every payable amount (USD) the creator's book reported, write by write.
    fn payable_states(&self, user_id: &str) -> Vec<i64> {
        let usd = payouts_runtime::Currency::usd();
        self.written
            .lock()
            .unwrap()
            .iter()
            .filter(|book| book.user_id == user_id)
            .map(|book| book.earnings(&usd).active.cents)
            .collect()
    }
}

#[async_trait::async_trait]
impl EarningsBookRepository for WatchedBooks {
    async fn get(&self, user_id: &str) -> Result<EarningsBook, ServiceError> {
        self.inner.get(user_id).await
    }

    async fn put(&self, book: &EarningsBook, expected_version: i64) -> Result<(), ServiceError> {
        self.inner.put(book, expected_version).await?;
        self.written.lock().unwrap().push(book.clone());
        Ok(())
    }

    async fn list(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<EarningsBook>, ServiceError> {
        self.inner.list(after, limit).await
    }
}

async fn run_cases(
    allocations: Arc<dyn AllocationRepository>,
    books: Arc<dyn EarningsBookRepository>,
    cases: Arc<dyn ChargeCaseRepository>,
) {
    let books = Arc::new(WatchedBooks {
        inner: books,
        written: std::sync::Mutex::new(Vec::new()),
    });
    let watched = Arc::clone(&books);
    let books: Arc<dyn EarningsBookRepository> = books;
    let clock = payouts_runtime::clock::ManualClock::new(at(0));
    let ledger = Arc::new(crate::earnings::Ledger {
        allocations,
        books,
        clock: Arc::new(clock.clone()),
    });
    let notices = Arc::new(Notices::default());
    let stripe = Arc::new(crate::ports::testing::MemoryRefunds::default());
    let service = crate::cases::Cases {
        ledger: Arc::clone(&ledger),
        cases: Arc::clone(&cases),
        notices: Arc::clone(&notices) as Arc<dyn crate::ports::NoticesPort>,
        refunds: Some(Arc::clone(&stripe) as Arc<dyn crate::ports::StripeRefunds>),
    };
    cases_are_stored_versioned_and_listed(cases.as_ref()).await;
    an_allocation_is_replaced_only_from_the_version_read(ledger.allocations.as_ref()).await;
    events_change_allocations_books_and_notices_exactly_once(&service, &notices).await;
    a_late_credit_meets_its_charges_case(&service).await;
    a_credit_after_a_refund_or_dispute_is_never_payable(&service, &watched).await;
    refunds_in_doubt_are_counted_from_stripes_refund_list(&service, &stripe, &notices).await;
    a_refund_before_its_charge_waits_until_the_charge_is_read(&service, &stripe, &notices).await;
    a_settlement_from_an_older_case_never_wins(&service).await;
}

fn charge_credit(id: &str, user_id: &str, charge_id: &str, cents: i64) -> Allocation {
    Allocation::credit(id, user_id, charge_id, "payer", Money::usd(cents), at(0)).unwrap()
}

/// A refunded charge listing its refunds (API versions before 2022-11-15): one refund of all.
fn refund_object(charge_id: &str, amount_refunded: i64) -> serde_json::Value {
    let mut charge = unlisted_charge(charge_id, amount_refunded);
    charge["refunds"] = serde_json::json!({"object": "list", "has_more": false, "data": [
        {"object": "refund", "id": format!("re_{charge_id}"), "amount": amount_refunded,
            "charge": charge_id, "status": "succeeded"}]});
    charge
}

/// A refunded charge as current API versions send it: no refunds list.
fn unlisted_charge(charge_id: &str, amount_refunded: i64) -> serde_json::Value {
    serde_json::json!({"object": "charge", "id": charge_id, "amount": 1000,
        "amount_refunded": amount_refunded, "currency": "usd"})
}

fn dispute_object(charge_id: &str, status: &str) -> serde_json::Value {
    serde_json::json!({"object": "dispute", "id": format!("dp_{charge_id}"), "charge": charge_id,
        "amount": 1000, "currency": "usd", "status": status, "reason": "fraudulent"})
}

async fn cases_are_stored_versioned_and_listed(cases: &dyn ChargeCaseRepository) {
    use crate::charges::{ChargeCase, ChargeNews, DisputeEvent, DisputeNews};
    let refunded = ChargeCase::new("ch_list_a", at(1))
        .merge(
            "evt_a",
            &crate::charges::parse("charge.refunded", &refund_object("ch_list_a", 5)).unwrap(),
            at(1),
            at(1),
        )
        .unwrap();
    cases.put(&refunded, 0).await.unwrap();
    assert_eq!(
        cases.get("ch_list_a").await.unwrap(),
        Some(refunded.clone())
    );
    assert_eq!(
        cases.put(&refunded, 0).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    let news = |charge: &str| {
        ChargeNews::Dispute(DisputeNews {
            id: format!("dp_{charge}"),
            charge_id: charge.to_owned(),
            amount: 1000,
            currency: payouts_runtime::Currency::usd(),
            status: "needs_response".into(),
            reason: "fraudulent".into(),
            kind: DisputeEvent::Created,
        })
    };
    for (minute, charge) in [(2, "ch_list_b"), (3, "ch_list_c")] {
        let case = ChargeCase::new(charge, at(minute))
            .merge("evt", &news(charge), at(minute), at(minute))
            .unwrap();
        cases.put(&case, 0).await.unwrap();
        assert_eq!(cases.get(charge).await.unwrap(), Some(case));
    }
    let ids = |page: Vec<ChargeCase>| page.into_iter().map(|c| c.charge_id).collect::<Vec<_>>();
    let first = cases.list_disputed(None, 1).await.unwrap();
    assert_eq!(
        ids(first.clone()),
        ["ch_list_c"],
        "newest first, disputed only"
    );
    let cursor = Some((first[0].created_at, first[0].charge_id.clone()));
    let rest = ids(cases.list_disputed(cursor, 10).await.unwrap());
    assert!(rest.contains(&"ch_list_b".to_owned()));
    assert!(!rest.contains(&"ch_list_a".to_owned()), "{rest:?}");
}

async fn an_allocation_is_replaced_only_from_the_version_read(
    allocations: &dyn AllocationRepository,
) {
    let credited = charge_credit("alloc_replace", "u-replace", "ch_replace", 700);
    allocations.record(&credited).await.unwrap();
    let mut changed = credited.clone();
    changed.status = AllocationStatus::Disputed;
    changed.frozen_cents = 700;
    changed.disputed_at = Some(at(1));
    changed.dispute_id = Some("dp_1".into());
    changed.audit.push(crate::domain::AllocationAudit {
        at: at(1),
        event_id: "evt_1".into(),
        from_status: AllocationStatus::Active,
        to_status: AllocationStatus::Disputed,
        from_cents: 700,
        to_cents: 700,
        reason: "dispute".into(),
    });
    changed.case_version = 1;
    changed.version = 2;
    allocations.replace(&changed, 1).await.unwrap();
    assert_eq!(
        allocations.get("alloc_replace").await.unwrap(),
        Some(changed.clone())
    );
    assert_eq!(
        allocations.replace(&changed, 1).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    let mut missing = changed.clone();
    missing.id = "alloc_missing".into();
    assert_eq!(
        allocations.replace(&missing, 1).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let by_charge = allocations.list_by_charge("ch_replace", 10).await.unwrap();
    assert_eq!(by_charge, [changed]);
}

async fn events_change_allocations_books_and_notices_exactly_once(
    service: &crate::cases::Cases,
    notices: &Notices,
) {
    let ledger = &service.ledger;
    for (id, user, cents) in [
        ("e1", "u-case-1", 600),
        ("e2", "u-case-2", 300),
        ("e3", "u-case-1", 100),
    ] {
        ledger
            .record(&charge_credit(id, user, "ch_case", cents))
            .await
            .unwrap();
    }
    let refund = refund_object("ch_case", 250);
    // The notifications service is down: the event fails after the money changed, and its
    // retry delivers what is owed without changing the money again.
    notices
        .failing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let error = service
        .handle("evt_refund", "charge.refunded", at(1), &refund)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    notices
        .failing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    for _ in 0..2 {
        service
            .handle("evt_refund", "charge.refunded", at(1), &refund)
            .await
            .unwrap();
    }
    let taken: i64 = ledger
        .allocations
        .list_by_charge("ch_case", 10)
        .await
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a.status, AllocationStatus::AtRisk);
            assert_eq!(a.audit.len(), 1, "{a:?}");
            a.refunded_cents
        })
        .sum();
    assert_eq!(taken, 250);
    for user in ["u-case-1", "u-case-2"] {
        assert_exact(ledger, user).await;
        let (_, book) = ledger
            .earnings_and_book(user, &payouts_runtime::Currency::usd())
            .await
            .unwrap();
        assert_eq!(
            book.recent_count(crate::domain::MarkKind::Refund, at(2), Duration::days(30)),
            1
        );
    }
    let sent = notices.sent();
    let alerts = sent
        .iter()
        .filter(|(user, m)| user.is_none() && m.kind == "refund_processed");
    assert_eq!(
        alerts.count(),
        2,
        "one alert per affected creator: {sent:?}"
    );
    assert_eq!(
        sent.iter()
            .filter(|(user, _)| user.as_deref() == Some("u-case-2"))
            .count(),
        1
    );
    assert!(
        service
            .cases
            .get("ch_case")
            .await
            .unwrap()
            .unwrap()
            .notices
            .is_empty()
    );

    // A dispute freezes what is left; lost, it takes all of it.
    service
        .handle(
            "evt_dp",
            "charge.dispute.created",
            at(2),
            &dispute_object("ch_case", "needs_response"),
        )
        .await
        .unwrap();
    let usd = payouts_runtime::Currency::usd();
    let frozen = ledger.earnings("u-case-1", &usd).await.unwrap();
    assert_eq!(frozen.active, Money::usd(0));
    assert_eq!(frozen.frozen.cents + frozen.refunded.cents, 700);
    service
        .handle(
            "evt_lost",
            "charge.dispute.closed",
            at(3),
            &dispute_object("ch_case", "lost"),
        )
        .await
        .unwrap();
    for user in ["u-case-1", "u-case-2"] {
        assert_exact(ledger, user).await;
        let earnings = ledger.earnings(user, &usd).await.unwrap();
        assert_eq!(earnings.lifetime, Money::usd(0));
        assert_eq!(earnings.frozen, Money::usd(0));
    }
    assert_eq!(
        ledger.earnings("u-case-1", &usd).await.unwrap().refunded,
        Money::usd(700)
    );
}

async fn a_late_credit_meets_its_charges_case(service: &crate::cases::Cases) {
    service
        .handle(
            "evt_early",
            "charge.dispute.created",
            at(1),
            &dispute_object("ch_late", "needs_response"),
        )
        .await
        .unwrap();
    let ledger = &service.ledger;
    ledger
        .record(&charge_credit("late_1", "u-late", "ch_late", 400))
        .await
        .unwrap();
    assert_eq!(service.settle("ch_late", "record").await.unwrap(), 1);
    let settled = ledger.allocations.get("late_1").await.unwrap().unwrap();
    assert_eq!(settled.status, AllocationStatus::Disputed);
    assert_eq!(settled.frozen_cents, 400);
    assert_exact(ledger, "u-late").await;
}

/// Defect 4 through the service, with events as current API versions send them (no refunds
/// list on the charge): refund A of 100 fails, refund B of 100 succeeds; Stripe lowers
/// `amount_refunded` when A fails, or does not. Stripe's list is read when in doubt; while it
/// cannot be read the charge stays reduced and the event fails (the inbox retries it).
async fn refunds_in_doubt_are_counted_from_stripes_refund_list(
    service: &crate::cases::Cases,
    stripe: &crate::ports::testing::MemoryRefunds,
    notices: &Notices,
) {
    let usd = payouts_runtime::Currency::usd();
    let refund = |id: &str, charge: &str, status: &str| {
        serde_json::json!({"object": "refund", "id": id, "amount": 100, "charge": charge,
            "status": status, "currency": "usd"})
    };
    for after_b in [100, 200] {
        let charge = format!("ch_doubt_{after_b}");
        let user = format!("u-doubt-{after_b}");
        let (id_a, id_b) = (format!("re_a_{after_b}"), format!("re_b_{after_b}"));
        service
            .record(&charge_credit(
                &format!("doubt_{after_b}"),
                &user,
                &charge,
                1000,
            ))
            .await
            .unwrap();
        let active = |cents: i64| {
            let (user, usd) = (user.clone(), usd.clone());
            async move {
                let earnings = service.ledger.earnings(&user, &usd).await.unwrap();
                assert_eq!(earnings.active.cents, cents, "after B {after_b}");
            }
        };
        stripe.set(&id_a, &charge, 100, "pending");
        let event = |name: &str| format!("evt_{name}_{after_b}");
        service
            .handle(
                &event("a"),
                "charge.refunded",
                at(1),
                &unlisted_charge(&charge, 100),
            )
            .await
            .unwrap();
        active(900).await;
        stripe.set(&id_a, &charge, 100, "failed");
        service
            .handle(
                &event("a_failed"),
                "refund.failed",
                at(2),
                &refund(&id_a, &charge, "failed"),
            )
            .await
            .unwrap();
        active(1000).await;
        stripe.set(&id_b, &charge, 100, "succeeded");
        // Stripe's list cannot be read: held at what the charge says, the event fails.
        stripe.fail_next(ServiceError::unavailable(
            "stripe down",
            anyhow::anyhow!("test"),
        ));
        let sent_before = notices.sent().len();
        let error = service
            .handle(
                &event("b"),
                "charge.refunded",
                at(3),
                &unlisted_charge(&charge, after_b),
            )
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Unavailable);
        active(1000 - after_b).await;
        assert_eq!(
            notices.sent().len(),
            sent_before,
            "told once Stripe answered"
        );
        // The inbox's retry reads the list.
        service
            .handle(
                &event("b"),
                "charge.refunded",
                at(3),
                &unlisted_charge(&charge, after_b),
            )
            .await
            .unwrap();
        active(900).await;
        let case = service.cases.get(&charge).await.unwrap().unwrap();
        assert_eq!(case.refunded_cents(), 100);
        assert!(!case.in_doubt());
        assert_exact(&service.ledger, &user).await;
        // A late duplicate of the first event changes nothing.
        service
            .handle(
                &event("a"),
                "charge.refunded",
                at(1),
                &unlisted_charge(&charge, 100),
            )
            .await
            .unwrap();
        active(900).await;
    }
}

/// A `refund.created` arrives and no event carrying the charge ever does: a refund object
/// names its charge and its own amount, not the charge's (a charge of 2000 that funded 600 +
/// 400; a refund of 500 takes a quarter: 150 + 100). The charge is read from Stripe; while it
/// cannot be (Stripe down, or no Stripe key) the event fails Unavailable and nothing changes;
/// the retry applies it exactly once.
async fn a_refund_before_its_charge_waits_until_the_charge_is_read(
    service: &crate::cases::Cases,
    stripe: &crate::ports::testing::MemoryRefunds,
    notices: &Notices,
) {
    use std::sync::atomic::Ordering::SeqCst;
    let usd = payouts_runtime::Currency::usd();
    let refund = |id: &str, charge: &str, amount: i64| {
        serde_json::json!({"object": "refund", "id": id, "amount": amount, "charge": charge,
            "status": "succeeded", "currency": "usd"})
    };
    let earnings = |user: &'static str| {
        let usd = usd.clone();
        async move {
            let earnings = service.ledger.earnings(user, &usd).await.unwrap();
            (earnings.active.cents, earnings.refunded.cents)
        }
    };
    let audits = || async {
        service
            .ledger
            .allocations
            .list_by_charge("ch_first", 10)
            .await
            .unwrap()
            .iter()
            .map(|a| a.audit.len())
            .collect::<Vec<_>>()
    };
    let told = |event: &str| {
        notices
            .sent()
            .iter()
            .filter(|(_, m)| m.key.contains(event))
            .count()
    };
    service
        .record(&charge_credit("first_a", "u-first-a", "ch_first", 600))
        .await
        .unwrap();
    service
        .record(&charge_credit("first_b", "u-first-b", "ch_first", 400))
        .await
        .unwrap();
    stripe.set_charge("ch_first", 2000);
    let event = refund("re_first", "ch_first", 500);

    // Stripe does not answer: Unavailable, nothing taken, nobody told.
    let calls = stripe.charge_calls.load(SeqCst);
    stripe.fail_next_charge(ServiceError::unavailable(
        "stripe down",
        anyhow::anyhow!("test"),
    ));
    let error = service
        .handle("evt_first", "refund.created", at(1), &event)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert_eq!(stripe.charge_calls.load(SeqCst), calls + 1);
    assert_eq!(earnings("u-first-a").await, (600, 0));
    assert_eq!(earnings("u-first-b").await, (400, 0));
    assert_eq!(audits().await, [0, 0], "no allocation changed");
    assert_eq!(told("evt_first"), 0);
    let case = service.cases.get("ch_first").await.unwrap().unwrap();
    assert_eq!(case.amount, None);
    assert!(case.needs_amount());

    // The inbox's retry reads the charge: the share is taken, once.
    for _ in 0..2 {
        service
            .handle("evt_first", "refund.created", at(1), &event)
            .await
            .unwrap();
        assert_eq!(earnings("u-first-a").await, (450, 150));
        assert_eq!(earnings("u-first-b").await, (300, 100));
        assert_eq!(audits().await, [1, 1], "changed once");
    }
    assert_eq!(
        stripe.charge_calls.load(SeqCst),
        calls + 2,
        "read once known"
    );
    let case = service.cases.get("ch_first").await.unwrap().unwrap();
    assert_eq!(
        case.amount,
        Some((2000, usd.clone())),
        "recorded on the case"
    );
    assert!(!case.needs_amount());
    assert_eq!(
        told("evt_first"),
        4,
        "an alert and a notification per creator"
    );
    assert_exact(&service.ledger, "u-first-a").await;
    assert_exact(&service.ledger, "u-first-b").await;

    // Without a Stripe key the refund waits (Unavailable), and so does a credit of its
    // charge (it would be written payable in full); with one, the retry applies it.
    let keyless = crate::cases::Cases {
        ledger: Arc::clone(&service.ledger),
        cases: Arc::clone(&service.cases),
        notices: Arc::clone(&service.notices),
        refunds: None,
    };
    keyless
        .record(&charge_credit("nokey_a", "u-nokey", "ch_nokey", 1000))
        .await
        .unwrap();
    let event = refund("re_nokey", "ch_nokey", 300);
    let error = keyless
        .handle("evt_nokey", "refund.created", at(2), &event)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    let error = keyless
        .record(&charge_credit("nokey_b", "u-nokey", "ch_nokey", 200))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable);
    assert!(
        service
            .ledger
            .allocations
            .get("nokey_b")
            .await
            .unwrap()
            .is_none()
    );
    assert_eq!(earnings("u-nokey").await, (1000, 0));
    assert_eq!(told("evt_nokey"), 0);
    stripe.set_charge("ch_nokey", 2000);
    service
        .handle("evt_nokey", "refund.created", at(2), &event)
        .await
        .unwrap();
    assert_eq!(earnings("u-nokey").await, (850, 150));
    // The credit retried now meets the charge's case: 300 of 2000 takes 15% of it too.
    let (credit, created) = service
        .record(&charge_credit("nokey_b", "u-nokey", "ch_nokey", 200))
        .await
        .unwrap();
    assert!(created);
    assert_eq!(credit.amount.cents + credit.refunded_cents, 200);
    assert_eq!(earnings("u-nokey").await, (1020, 180));
    assert_exact(&service.ledger, "u-nokey").await;
}

/// The interleaving of a credit recorded after its charge was disputed (or fully refunded):
/// every state of the creator's book a payout admission could read between the writes.
async fn a_credit_after_a_refund_or_dispute_is_never_payable(
    service: &crate::cases::Cases,
    watched: &WatchedBooks,
) {
    service
        .handle(
            "evt_before_credit_dp",
            "charge.dispute.created",
            at(1),
            &dispute_object("ch_after_dp", "needs_response"),
        )
        .await
        .unwrap();
    let refunded = serde_json::json!({"object": "charge", "id": "ch_after_re", "amount": 1000,
        "amount_refunded": 1000, "currency": "usd", "refunds": {"object": "list",
        "has_more": false, "data": [{"object": "refund", "id": "re_after", "amount": 1000,
        "charge": "ch_after_re", "status": "succeeded"}]}});
    service
        .handle("evt_before_credit_re", "charge.refunded", at(1), &refunded)
        .await
        .unwrap();
    for (id, charge) in [("after_dp", "ch_after_dp"), ("after_re", "ch_after_re")] {
        let user = format!("u-{id}");
        let (recorded, created) = service
            .record(&charge_credit(id, &user, charge, 400))
            .await
            .unwrap();
        assert!(created);
        assert_eq!(recorded.amount.cents + recorded.refunded_cents, 400);
        let states = watched.payable_states(&user);
        assert!(!states.is_empty());
        assert!(
            states.iter().all(|payable| *payable == 0),
            "{id}: a reader between the writes saw payable {states:?}"
        );
        let (_, book) = service
            .ledger
            .earnings_and_book(&user, &payouts_runtime::Currency::usd())
            .await
            .unwrap();
        assert_eq!(
            book.recent.len(),
            1,
            "{id}: the charge's mark came with the credit"
        );
        assert_exact(&service.ledger, &user).await;
        // A retry of the same credit changes nothing.
        let (again, created) = service
            .record(&charge_credit(id, &user, charge, 400))
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(again, recorded);
    }
}

async fn a_settlement_from_an_older_case_never_wins(service: &crate::cases::Cases) {
    let ledger = &service.ledger;
    ledger
        .record(&charge_credit("old_1", "u-old", "ch_old", 1000))
        .await
        .unwrap();
    service
        .handle(
            "evt_o1",
            "charge.refunded",
            at(1),
            &refund_object("ch_old", 100),
        )
        .await
        .unwrap();
    let older = service.cases.get("ch_old").await.unwrap().unwrap();
    service
        .handle(
            "evt_o2",
            "charge.refunded",
            at(2),
            &refund_object("ch_old", 400),
        )
        .await
        .unwrap();
    // A writer that read the case before the second refund settles now: nothing to do.
    let current = ledger
        .allocations
        .list_by_charge("ch_old", 10)
        .await
        .unwrap();
    assert!(crate::charges::settle(&older, &current, "evt_o1", at(3)).is_empty());
    assert_eq!(current[0].refunded_cents, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    run(Arc::new(MemoryAllocations::default())).await;
    run_ledger(
        Arc::new(MemoryAllocations::default()),
        Arc::new(MemoryEarningsBooks::default()),
    )
    .await;
    run_cases(
        Arc::new(MemoryAllocations::default()),
        Arc::new(MemoryEarningsBooks::default()),
        Arc::new(MemoryChargeCases::default()),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mongo_store_conforms() {
    let database = payouts_runtime::testing::mongo_database("disputes").await;
    run(Arc::new(MongoAllocations::open(&database).await.unwrap())).await;
    let database = payouts_runtime::testing::mongo_database("earnings").await;
    run_ledger(
        Arc::new(MongoAllocations::open(&database).await.unwrap()),
        Arc::new(MongoEarningsBooks::open(&database)),
    )
    .await;
    let database = payouts_runtime::testing::mongo_database("cases").await;
    run_cases(
        Arc::new(MongoAllocations::open(&database).await.unwrap()),
        Arc::new(MongoEarningsBooks::open(&database)),
        Arc::new(MongoChargeCases::open(&database).await.unwrap()),
    )
    .await;
}
