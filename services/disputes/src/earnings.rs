//! Recording allocations and reading earnings through each creator's [`EarningsBook`]: running
//! totals kept exact without multi-document transactions, so reading a creator's earnings is
//! one document read however long their history.
//!
//! A credit is written to the book first, as an intent counted in the totals (one
//! compare-and-set), then stored as an allocation, then the intent is cleared. Any step can
//! be cut short by a crash: whoever finds an intent finishes it (the next change of that
//! creator's book, a retry of the same credit, or a read that finds it stale). An intent whose
//! allocation id turns out to belong to another credit is taken back out of the totals.
//! Earnings are reported without intents, so a total never counts money not stored.

use std::sync::Arc;

use chrono::Duration;
use payouts_runtime::{Clock, Currency, ErrorKind, ServiceError};

use crate::domain::{Allocation, Change, Earnings, EarningsBook, RecentMark};
use crate::store::{AllocationRepository, EarningsBookRepository, repeated};

/// Compare-and-set rounds before a change gives up (the caller retries).
const MAX_ROUNDS: usize = 32;

/// An intent older than this was left by a writer that stopped; a read finishes it.
pub const STALE_INTENT: Duration = Duration::seconds(30);

/// Too many compare-and-set rounds lost to concurrent writers of `what`: the caller retries.
pub(crate) fn lost_rounds(what: &str) -> ServiceError {
    ServiceError::unavailable(
        format!("too many concurrent changes to {what}; try again"),
        anyhow::anyhow!("{MAX_ROUNDS} compare-and-set rounds lost"),
    )
}

/// Allocations and the earnings books that total them.
pub struct Ledger {
    pub allocations: Arc<dyn AllocationRepository>,
    pub books: Arc<dyn EarningsBookRepository>,
    pub clock: Arc<dyn Clock>,
}

impl Ledger {
    /// Records a credit, idempotent on its id: the same credit again returns the stored one
    /// (`false`); another credit under a used id is AlreadyExists.
    pub async fn record(
        &self,
        allocation: &Allocation,
    ) -> Result<(Allocation, bool), ServiceError> {
        self.record_with_marks(allocation, &[]).await
    }

    /// [`Ledger::record`], remembering `marks` (the credit's charge's refunds and disputes)
    /// in the same write of the book.
    pub async fn record_with_marks(
        &self,
        allocation: &Allocation,
        marks: &[RecentMark],
    ) -> Result<(Allocation, bool), ServiceError> {
        for _ in 0..MAX_ROUNDS {
            let book = self.books.get(&allocation.user_id).await?;
            if !book.pending.is_empty() {
                self.finish(&book).await?;
                continue;
            }
            if let Some(stored) = self.allocations.get(&allocation.id).await? {
                return repeated(stored, allocation);
            }
            let new_marks: Vec<RecentMark> = marks
                .iter()
                .filter(|mark| !book.has_mark(mark))
                .cloned()
                .collect();
            let intent = book.with_changes(
                vec![Change {
                    before: None,
                    after: allocation.clone(),
                }],
                &new_marks,
                allocation.created_at,
            );
            match self.books.put(&intent, book.version).await {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::Conflict => continue,
                Err(error) => return Err(error),
            }
            self.finish(&intent).await?;
            return match self.allocations.get(&allocation.id).await? {
                Some(stored) if stored.same_credit(allocation) => Ok((stored, true)),
                _ => Err(ServiceError::already_exists(format!(
                    "allocation {} already exists with a different credit",
                    allocation.id
                ))),
            };
        }
        Err(lost_rounds("this creator's earnings"))
    }

    /// Applies changes of one creator's stored allocations (each `before` as read) and
    /// remembers `marks`, through the book. Conflict when an allocation is no longer as
    /// read: the caller reads again and recomputes.
    pub async fn change(
        &self,
        user_id: &str,
        changes: &[(Allocation, Allocation)],
        marks: &[RecentMark],
    ) -> Result<(), ServiceError> {
        for _ in 0..MAX_ROUNDS {
            let book = self.books.get(user_id).await?;
            if !book.pending.is_empty() {
                self.finish(&book).await?;
                continue;
            }
            for (before, _) in changes {
                let stored = self.allocations.get(&before.id).await?;
                if stored.as_ref().map(|a| a.version) != Some(before.version) {
                    return Err(crate::store::stale_allocation(&before.id));
                }
            }
            let new_marks: Vec<RecentMark> = marks
                .iter()
                .filter(|mark| !book.has_mark(mark))
                .cloned()
                .collect();
            if changes.is_empty() && new_marks.is_empty() {
                return Ok(());
            }
            let intent = book.with_changes(
                changes
                    .iter()
                    .map(|(before, after)| Change {
                        before: Some(before.clone()),
                        after: after.clone(),
                    })
                    .collect(),
                &new_marks,
                self.clock.now(),
            );
            match self.books.put(&intent, book.version).await {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::Conflict => continue,
                Err(error) => return Err(error),
            }
            return self.finish(&intent).await;
        }
        Err(lost_rounds("this creator's earnings"))
    }

    /// A creator's earnings in `currency`: one read of their book (two if a writer left an
    /// intent behind long enough ago that it must be finished first).
    pub async fn earnings(
        &self,
        user_id: &str,
        currency: &Currency,
    ) -> Result<Earnings, ServiceError> {
        Ok(self.earnings_and_book(user_id, currency).await?.0)
    }

    /// [`Ledger::earnings`] and the book they were read from (its recent refunds and
    /// disputes).
    pub async fn earnings_and_book(
        &self,
        user_id: &str,
        currency: &Currency,
    ) -> Result<(Earnings, EarningsBook), ServiceError> {
        let book = self.books.get(user_id).await?;
        let now = self.clock.now();
        if !book
            .pending
            .iter()
            .any(|intent| now - intent.after.updated_at > STALE_INTENT)
        {
            return Ok((book.earnings(currency), book));
        }
        self.finish(&book).await?;
        let book = self.books.get(user_id).await?;
        Ok((book.earnings(currency), book))
    }

    /// Finishes the book's intents: stores each credit or change (or finds it stored),
    /// takes back those that cannot be (an id another credit holds, an allocation changed
    /// otherwise), and clears them. Someone else finishing them first is as good.
    async fn finish(&self, book: &EarningsBook) -> Result<(), ServiceError> {
        let mut stored = Vec::new();
        for intent in &book.pending {
            let after = &intent.after;
            let outcome = match &intent.before {
                None => self.allocations.record(after).await.map(|_| ()),
                Some(before) => self.allocations.replace(after, before.version).await,
            };
            match outcome {
                Ok(()) => stored.push(after.id.clone()),
                Err(error) if error.kind() == ErrorKind::AlreadyExists => {
                    tracing::warn!(allocation_id = %after.id, user_id = %book.user_id, "allocation id held by another credit; the intent is taken back");
                }
                Err(error) if error.kind() == ErrorKind::Conflict => {
                    // Applied by whoever finished it first, or changed otherwise.
                    let now = self.allocations.get(&after.id).await?;
                    if now.is_some_and(|now| now.version == after.version) {
                        stored.push(after.id.clone());
                    } else {
                        tracing::warn!(allocation_id = %after.id, user_id = %book.user_id, "allocation changed under a pending change; the intent is taken back");
                    }
                }
                Err(error) => return Err(error),
            }
        }
        match self
            .books
            .put(&book.with_pending_settled(&stored), book.version)
            .await
        {
            Err(error) if error.kind() != ErrorKind::Conflict => Err(error),
            _ => Ok(()),
        }
    }
}
