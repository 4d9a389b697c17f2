//! The behaviour every `AllocationRepository` must have, run against the embedded store and
//! against MongoDB (the test server, or the one `MONGODB_URI` names).

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use payouts_runtime::store::store_precision;
use payouts_runtime::{Clock as _, ErrorKind, Money};

use super::*;

fn at(minute: i64) -> DateTime<Utc> {
    store_precision(Utc::now()) + Duration::minutes(minute)
}

fn credit(id: &str, user_id: &str, cents: i64, minute: i64) -> Allocation {
    Allocation::credit(id, user_id, "ch_1", Money::usd(cents), at(minute)).unwrap()
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
        Allocation::credit(id, "u-stop", "ch_1", Money::usd(cents), clock.now()).unwrap()
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embedded_store_conforms() {
    run(Arc::new(MemoryAllocations::default())).await;
    run_ledger(
        Arc::new(MemoryAllocations::default()),
        Arc::new(MemoryEarningsBooks::default()),
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
}
