//! The behaviour every `NotificationRepository` must have, run against the embedded store
//! and against MongoDB (the test server, or the one `MONGODB_URI` names).

use chrono::{DateTime, Duration, TimeZone, Utc};
use payouts_runtime::ErrorKind;
use payouts_runtime::store::store_precision;

use super::*;
use crate::domain::{Criticality, NewNotification};

fn at(minute: i64) -> DateTime<Utc> {
    store_precision(Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap() + Duration::minutes(minute))
}

fn notification(recipient: &str, kind: &str, dedupe: &str, minute: i64) -> Notification {
    NewNotification::parse(
        recipient,
        kind,
        "Title",
        "Body",
        "{\"k\":1}",
        Criticality::High,
        dedupe,
    )
    .unwrap()
    .into_notification(uuid::Uuid::new_v4().to_string(), at(minute))
}

async fn run(repository: &dyn NotificationRepository) {
    pages_follow_the_cursor(repository).await;
    stores_and_lists_newest_first(repository).await;
    dedupe_key_stores_once(repository).await;
    unread_filter_and_mark_read(repository).await;
    mark_read_of_someone_elses_notification_is_not_found(repository).await;
}

async fn stores_and_lists_newest_first(repository: &dyn NotificationRepository) {
    let older = notification("list-user", "payout_completed", "", 1);
    let newer = notification("list-user", "payout_failed", "", 2);
    let other = notification("other-user", "payout_failed", "", 3);
    for n in [&older, &newer, &other] {
        let (stored, created) = repository.insert(n.clone()).await.unwrap();
        assert!(created);
        assert_eq!(&stored, n);
    }
    let listed = repository.list("list-user", false, None, 10).await.unwrap();
    assert_eq!(listed, vec![newer.clone(), older]);
    assert_eq!(
        repository.list("list-user", false, None, 1).await.unwrap(),
        vec![newer]
    );
}

async fn pages_follow_the_cursor(repository: &dyn NotificationRepository) {
    let items: Vec<Notification> = (0..5)
        .map(|minute| notification("page-user", "k", "", minute))
        .collect();
    for n in &items {
        repository.insert(n.clone()).await.unwrap();
    }
    let first = repository.list("page-user", false, None, 2).await.unwrap();
    assert_eq!(first, vec![items[4].clone(), items[3].clone()]);
    let cursor = Some((first[1].created_at, first[1].id.clone()));
    let second = repository
        .list("page-user", false, cursor, 10)
        .await
        .unwrap();
    assert_eq!(
        second,
        vec![items[2].clone(), items[1].clone(), items[0].clone()]
    );
}

async fn dedupe_key_stores_once(repository: &dyn NotificationRepository) {
    let first = notification("dedupe-user", "payout_completed", "payout-1-completed", 1);
    let again = notification("dedupe-user", "payout_completed", "payout-1-completed", 5);
    let (stored_first, created_first) = repository.insert(first).await.unwrap();
    let (stored_again, created_again) = repository.insert(again).await.unwrap();
    assert!(created_first);
    assert!(!created_again);
    assert_eq!(stored_again, stored_first);
    // The same key for another recipient is another notification.
    let (_, created_other) = repository
        .insert(notification(
            "dedupe-other",
            "payout_completed",
            "payout-1-completed",
            1,
        ))
        .await
        .unwrap();
    assert!(created_other);
    assert_eq!(
        repository
            .list("dedupe-user", false, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn unread_filter_and_mark_read(repository: &dyn NotificationRepository) {
    let a = notification("read-user", "a", "", 1);
    let b = notification("read-user", "b", "", 2);
    repository.insert(a.clone()).await.unwrap();
    repository.insert(b.clone()).await.unwrap();
    let read = repository
        .mark_read("read-user", &a.id, at(10))
        .await
        .unwrap();
    assert_eq!(read.read_at, Some(at(10)));
    // Marking again keeps the first read time.
    let again = repository
        .mark_read("read-user", &a.id, at(20))
        .await
        .unwrap();
    assert_eq!(again.read_at, Some(at(10)));
    let unread = repository.list("read-user", true, None, 10).await.unwrap();
    assert_eq!(
        unread.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(),
        vec![b.id.as_str()]
    );
}

async fn mark_read_of_someone_elses_notification_is_not_found(
    repository: &dyn NotificationRepository,
) {
    let mine = notification("owner", "a", "", 1);
    repository.insert(mine.clone()).await.unwrap();
    let error = repository
        .mark_read("intruder", &mine.id, at(2))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound);
    let error = repository
        .mark_read("owner", "no-such-id", at(2))
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound);
    assert_eq!(
        repository
            .list("owner", true, None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn embedded_store_conforms() {
    run(&MemoryNotifications::default()).await;
}

#[tokio::test]
async fn mongo_store_conforms() {
    let database = payouts_runtime::testing::mongo_database("notifications").await;
    run(&MongoNotifications::open(&database).await.unwrap()).await;
}

mod alerts {
    use super::*;
    use crate::alerts::{Alert, AlertStatus, Severity};
    use crate::escalation::Level;
    use crate::paging::{HaltStatus, PagePolicy, PageStatus};

    fn alert(key: &str, minute: i64) -> Alert {
        Alert::raise(
            uuid::Uuid::new_v4().to_string(),
            "payout_outcome_unknown",
            Severity::Critical,
            "Payout outcome unknown",
            "no answer from Stripe",
            "{\"payoutId\":\"p\"}",
            key,
            at(minute),
        )
        .unwrap()
    }

    async fn run(repository: &dyn AlertRepository) {
        let first = alert("payout_1:unknown", 1);
        let (stored, created) = repository.create(&first).await.unwrap();
        assert!(created);
        assert_eq!(stored, first);
        // The same key again (a retried raise) stores nothing new.
        let (again, created) = repository
            .create(&alert("payout_1:unknown", 5))
            .await
            .unwrap();
        assert!(!created);
        assert_eq!(again, first);
        let second = alert("", 2);
        let third = alert("payout_3:stray", 3);
        repository.create(&second).await.unwrap();
        repository.create(&third).await.unwrap();

        let page = repository.list(None, None, None, None, 2).await.unwrap();
        assert_eq!(page, vec![third.clone(), second.clone()]);
        let cursor = Some((page[1].created_at, page[1].id.clone()));
        assert_eq!(
            repository.list(None, None, None, cursor, 10).await.unwrap(),
            vec![first.clone()]
        );

        let resolved = first
            .moved_to(AlertStatus::Resolved, at(9), "admin:ops", Some("handled"))
            .unwrap();
        repository.replace(&resolved, first.version).await.unwrap();
        let error = repository
            .replace(&resolved, first.version)
            .await
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Conflict);
        assert_eq!(
            repository
                .list(Some(AlertStatus::Resolved), None, None, None, 10)
                .await
                .unwrap(),
            vec![resolved.clone()]
        );
        assert_eq!(
            repository
                .list(Some(AlertStatus::Active), None, None, None, 10)
                .await
                .unwrap(),
            vec![third, second]
        );
        assert_eq!(
            repository.get(&resolved.id).await.unwrap(),
            Some(resolved.clone())
        );
        // By type.
        let other = Alert::raise(
            uuid::Uuid::new_v4().to_string(),
            "platform_balance",
            Severity::Warning,
            "Warning: Platform Balance Below Recommended Level",
            "low",
            "{\"level\":\"warning\",\"nested\":{\"n\":2}}",
            "balance:1",
            at(4),
        )
        .unwrap();
        repository.create(&other).await.unwrap();
        assert_eq!(
            repository
                .list(None, Some("platform_balance"), None, None, 10)
                .await
                .unwrap(),
            vec![other.clone()],
            "the metadata round-trips"
        );
        assert_eq!(
            repository
                .list(
                    Some(AlertStatus::Resolved),
                    Some("payout_outcome_unknown"),
                    None,
                    None,
                    10
                )
                .await
                .unwrap(),
            vec![resolved]
        );
        assert_eq!(repository.get("alert_nothing").await.unwrap(), None);

        // Open alerts by type: active ones only.
        let open = repository.open_by_type().await.unwrap();
        let key = |kind: &str, level| (kind.to_owned(), level);
        assert_eq!(
            open.get(&key("payout_outcome_unknown", Level::Admins)),
            Some(&2),
            "{open:?}"
        );
        assert_eq!(
            open.get(&key("platform_balance", Level::Recorded)),
            Some(&1),
            "{open:?}"
        );
        // By level.
        assert_eq!(
            repository
                .list(None, None, Some(Level::Recorded), None, 10)
                .await
                .unwrap(),
            vec![other.clone()]
        );

        // The email outbox: due when pending and its time has come; its state round-trips.
        let policy = crate::email::EmailPolicy::default();
        let mailed = alert("balance:mail", 20).owing_email(at(20));
        repository.create(&mailed).await.unwrap();
        let due = |minute| async move {
            repository
                .emails_due(at(minute), 10)
                .await
                .unwrap()
                .into_iter()
                .map(|a| a.id)
                .collect::<Vec<_>>()
        };
        assert_eq!(due(19).await, Vec::<String>::new());
        assert_eq!(due(20).await, vec![mailed.id.clone()]);
        let claimed = mailed.claimed_for_email(at(20), &policy).unwrap();
        repository.replace(&claimed, mailed.version).await.unwrap();
        assert_eq!(due(21).await, Vec::<String>::new(), "leased to its sender");
        let failed = claimed.email_failed(at(21), "refused", &policy).unwrap();
        repository.replace(&failed, claimed.version).await.unwrap();
        assert_eq!(
            repository.get(&mailed.id).await.unwrap(),
            Some(failed.clone())
        );
        let sent = failed
            .claimed_for_email(at(30), &policy)
            .unwrap()
            .email_sent(at(30))
            .unwrap();
        repository.replace(&sent, failed.version).await.unwrap();
        assert_eq!(due(1_000).await, Vec::<String>::new());
        assert_eq!(repository.get(&mailed.id).await.unwrap(), Some(sent));

        // Level 3: the page and the halt are outbox entries too; their state round-trips.
        let mut escalated = alert("escalation:1", 40);
        escalated.level = Level::Leads;
        escalated.signal = Some("dispute_created".to_owned());
        escalated.signal_count = 3;
        let escalated = escalated.owing_escalation(at(40), true);
        repository.create(&escalated).await.unwrap();
        assert_eq!(
            repository.get(&escalated.id).await.unwrap(),
            Some(escalated.clone())
        );
        let ids = |alerts: Vec<Alert>| alerts.into_iter().map(|a| a.id).collect::<Vec<_>>();
        assert_eq!(
            ids(repository.pages_due(at(39), 10).await.unwrap()),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(repository.pages_due(at(40), 10).await.unwrap()),
            vec![escalated.id.clone()]
        );
        assert_eq!(
            ids(repository.halts_due(at(40), 10).await.unwrap()),
            vec![escalated.id.clone()]
        );
        assert_eq!(repository.pages_owed().await.unwrap(), 1);
        let policy = PagePolicy::new(chrono::Duration::seconds(60));
        let claimed = escalated.claimed_for_page(at(40), &policy).unwrap();
        let pushed = claimed
            .page_pushed(at(40), claimed.page_ends_at(at(40), &policy), &policy)
            .unwrap()
            .claimed_for_halt(at(40))
            .unwrap()
            .halt_set(at(40))
            .unwrap();
        repository
            .replace(&pushed, escalated.version)
            .await
            .unwrap();
        assert_eq!(
            repository.get(&escalated.id).await.unwrap(),
            Some(pushed.clone())
        );
        assert_eq!(pushed.page.as_ref().unwrap().status, PageStatus::Firing);
        assert_eq!(pushed.halt.as_ref().unwrap().status, HaltStatus::Set);
        assert_eq!(repository.pages_owed().await.unwrap(), 0);
        assert_eq!(
            ids(repository.halts_due(at(100), 10).await.unwrap()),
            Vec::<String>::new()
        );
        assert_eq!(
            ids(repository.pages_due(at(41), 10).await.unwrap()),
            vec![escalated.id.clone()],
            "re-pushed after the interval"
        );
        assert_eq!(
            ids(repository
                .list(None, None, Some(Level::Leads), None, 10)
                .await
                .unwrap()),
            vec![escalated.id.clone()]
        );
    }

    #[tokio::test]
    async fn embedded_alerts_conform() {
        run(&MemoryAlerts::default()).await;
    }

    #[tokio::test]
    async fn mongo_alerts_conform() {
        let database = payouts_runtime::testing::mongo_database("alerts").await;
        run(&MongoAlerts::open(&database).await.unwrap()).await;
    }
}
