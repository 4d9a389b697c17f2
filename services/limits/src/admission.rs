//! The limits service core: read-only validation, and admission (checks + reservation) as
//! one compare-and-set on the user's quota document.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use payouts_proto::disputes::v1::GetEarningsRequest;
use payouts_proto::disputes::v1::disputes_service_client::DisputesServiceClient;
use payouts_proto::payouts::v1::GetAccountRequest;
use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use payouts_runtime::grpc::{TracedChannel, service_channel};
use payouts_runtime::{Clock, ErrorKind, IdSource, ServiceError, ServiceName, Settings};

use crate::checks::{self, Admission, Decision, Release, UserContext};
use crate::domain::{BlockedAttempt, LimitConfig};
use crate::store::{BlockedAttemptRepository, QuotaRepository};

/// A user's earnings as the checks need them, in cents.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserEarnings {
    /// Everything ever credited, after refunds.
    pub lifetime_cents: i64,
    /// Payable now: active allocations, not frozen, not refunded.
    pub payable_cents: i64,
    /// Charges that funded them refunded or disputed in the last 30 days.
    pub recent_refunds_and_disputes: i64,
}

/// Where the checks learn a user's account age and earnings.
#[async_trait]
pub trait ContextSource: Send + Sync + 'static {
    /// When the user's account was created; `None` when none is registered.
    async fn account_created_at(
        &self,
        user_id: &str,
    ) -> Result<Option<DateTime<Utc>>, ServiceError>;

    async fn earnings(&self, user_id: &str) -> Result<UserEarnings, ServiceError>;
}

/// The context from the payouts service (accounts) and the disputes service (earnings).
#[derive(Clone)]
pub struct GrpcContext {
    payouts: PayoutsServiceClient<TracedChannel>,
    disputes: DisputesServiceClient<TracedChannel>,
}

impl GrpcContext {
    pub fn new(settings: &Settings) -> anyhow::Result<Self> {
        Ok(Self {
            payouts: PayoutsServiceClient::new(service_channel(settings, ServiceName::Payouts)?),
            disputes: DisputesServiceClient::new(service_channel(settings, ServiceName::Disputes)?),
        })
    }
}

#[async_trait]
impl ContextSource for GrpcContext {
    async fn account_created_at(
        &self,
        user_id: &str,
    ) -> Result<Option<DateTime<Utc>>, ServiceError> {
        let answer = self
            .payouts
            .clone()
            .get_account(GetAccountRequest {
                user_id: user_id.to_owned(),
            })
            .await;
        match answer {
            Ok(response) => Ok(response
                .into_inner()
                .account
                .and_then(|account| account.account_created_at)
                .and_then(|at| {
                    DateTime::from_timestamp(at.seconds, u32::try_from(at.nanos).unwrap_or(0))
                })),
            Err(status) if status.code() == tonic::Code::NotFound => Ok(None),
            Err(status) => Err(ServiceError::from_remote("payouts", &status)),
        }
    }

    async fn earnings(&self, user_id: &str) -> Result<UserEarnings, ServiceError> {
        let earnings = self
            .disputes
            .clone()
            .get_earnings(GetEarningsRequest {
                user_id: user_id.to_owned(),
                currency: "usd".to_owned(),
            })
            .await
            .map_err(|status| ServiceError::from_remote("disputes", &status))?
            .into_inner();
        Ok(UserEarnings {
            lifetime_cents: earnings.lifetime.map_or(0, |money| money.cents),
            payable_cents: earnings.active.map_or(0, |money| money.cents),
            recent_refunds_and_disputes: earnings.recent_refund_count
                + earnings.recent_dispute_count,
        })
    }
}

/// What reserving quota concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    pub decision: Decision,
    /// Quota is held for the payout.
    pub reserved: bool,
}

/// What setting a release concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Released {
    /// The reservation gives back what was asked (now, or already).
    pub applied: bool,
    /// A reservation exists for the payout.
    pub found: bool,
    /// What the reservation still holds.
    pub held_cents: i64,
}

/// What re-checking an admitted payout concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rechecked {
    pub payable: bool,
    pub reason: String,
    pub available_cents: i64,
}

/// How many times an admission that lost a compare-and-set is retried.
const MAX_ADMISSION_ATTEMPTS: u32 = 100;

/// The limits service core.
pub struct Limits {
    config: LimitConfig,
    quotas: Arc<dyn QuotaRepository>,
    blocked_attempts: Arc<dyn BlockedAttemptRepository>,
    context: Arc<dyn ContextSource>,
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
}

impl Limits {
    pub fn new(
        config: LimitConfig,
        quotas: Arc<dyn QuotaRepository>,
        blocked_attempts: Arc<dyn BlockedAttemptRepository>,
        context: Arc<dyn ContextSource>,
        clock: Arc<dyn Clock>,
        ids: Arc<dyn IdSource>,
    ) -> Self {
        Self {
            config,
            quotas,
            blocked_attempts,
            context,
            clock,
            ids,
        }
    }

    /// What each user's payouts hold (admitted, not given back), in the given order.
    pub async fn held(&self, user_ids: &[String]) -> Result<Vec<(String, i64)>, ServiceError> {
        let mut held = Vec::with_capacity(user_ids.len());
        for user_id in user_ids {
            let quota = self.quotas.get(user_id).await?;
            held.push((user_id.clone(), quota.committed_cents));
        }
        Ok(held)
    }

    pub fn config(&self) -> &LimitConfig {
        &self.config
    }

    pub fn blocked_attempts(&self) -> &Arc<dyn BlockedAttemptRepository> {
        &self.blocked_attempts
    }

    /// Would this payout be allowed now? Read-only, except that a blocked attempt is recorded.
    /// (It does not count as an attempt for the frequency check: a caller may validate
    /// before it requests, and that is one attempt, not two.)
    pub async fn validate(
        &self,
        user_id: &str,
        amount_cents: i64,
    ) -> Result<Decision, ServiceError> {
        let context = self.user_context(user_id, None).await?;
        let quota = self.quotas.get(user_id).await?;
        let decision = checks::evaluate(
            &self.config,
            &quota,
            &context,
            amount_cents,
            self.clock.now(),
        );
        if !decision.allowed {
            let id = self.ids.next("blocked");
            self.record_blocked(id, user_id, amount_cents, &decision)
                .await?;
        }
        Ok(decision)
    }

    /// What the checks know of a user. The account's creation time is asked of the payouts
    /// service unless the caller already said (`known_account`: the payouts service owns
    /// accounts and says when it asks); both questions go at once, so the caller's deadline
    /// covers one round trip, not two.
    async fn user_context(
        &self,
        user_id: &str,
        known_account: Option<Option<DateTime<Utc>>>,
    ) -> Result<UserContext, ServiceError> {
        let (account_created_at, earnings) = match known_account {
            Some(known) => (known, self.context.earnings(user_id).await?),
            None => {
                let (account, earnings) = tokio::join!(
                    self.context.account_created_at(user_id),
                    self.context.earnings(user_id)
                );
                (account?, earnings?)
            }
        };
        Ok(UserContext {
            account_created_at,
            lifetime_earnings_cents: earnings.lifetime_cents,
            payable_earnings_cents: earnings.payable_cents,
            recent_refunds_and_disputes: earnings.recent_refunds_and_disputes,
        })
    }

    /// The checks and the reservation as one atomic step per user; idempotent on the payout,
    /// refusals included. An amount above the user's available balance is
    /// FAILED_PRECONDITION (and recorded as a blocked attempt). `account_created_at` is the
    /// account's creation time when the caller knows it (else it is asked of payouts).
    pub async fn reserve(
        &self,
        user_id: &str,
        payout_id: &str,
        amount_cents: i64,
        requested_at: DateTime<Utc>,
        account_created_at: Option<DateTime<Utc>>,
    ) -> Result<Reserved, ServiceError> {
        let context = self
            .user_context(user_id, account_created_at.map(Some))
            .await?;
        // A refusal of this payout is recorded under an id of its own, so recording it again
        // (a retried call that finds the refusal) stores nothing new.
        let blocked_id = format!("blocked_{payout_id}");
        for _ in 0..MAX_ADMISSION_ATTEMPTS {
            let quota = self.quotas.get(user_id).await?;
            let now = self.clock.now();
            let admission = checks::admit(
                &self.config,
                &quota,
                &context,
                payout_id,
                amount_cents,
                requested_at,
                now,
            );
            let (decision, store, reserved) = match admission {
                Admission::AlreadyAdmitted { decision } => {
                    return Ok(Reserved {
                        decision,
                        reserved: true,
                    });
                }
                Admission::AlreadyRefused { decision, refusal } => {
                    self.record_blocked(blocked_id, user_id, amount_cents, &decision)
                        .await?;
                    return refused(decision, refusal.available_cents, amount_cents);
                }
                Admission::Refused { decision, quota } => (decision, quota, false),
                Admission::InsufficientBalance {
                    decision, quota, ..
                } => (decision, quota, false),
                Admission::Admitted { decision, quota } => (decision, quota, true),
                Admission::Expired {
                    decision,
                    quota: fenced,
                } => {
                    // Written only to move the version: see checks::ADMISSION_WINDOW.
                    match self.quotas.put(&fenced, quota.version).await {
                        Ok(()) => {
                            return Ok(Reserved {
                                decision,
                                reserved: false,
                            });
                        }
                        Err(error) if error.kind() == ErrorKind::Conflict => continue,
                        Err(error) => return Err(error),
                    }
                }
            };
            match self.quotas.put(&store, quota.version).await {
                Ok(()) => {}
                Err(error) if error.kind() == ErrorKind::Conflict => {
                    // Another admission of this user won; decide again on its result.
                    tokio::task::yield_now().await;
                    continue;
                }
                Err(error) => return Err(error),
            }
            if reserved {
                tracing::info!(
                    user_id,
                    payout_id,
                    amount_cents,
                    requires_approval = decision.requires_approval,
                    "payout quota reserved"
                );
                metrics::counter!("payouts_limits_admitted_total").increment(1);
                return Ok(Reserved {
                    decision,
                    reserved: true,
                });
            }
            self.record_blocked(blocked_id, user_id, amount_cents, &decision)
                .await?;
            let available = store
                .refusal_of(payout_id)
                .and_then(|refusal| refusal.available_cents);
            return refused(decision, available, amount_cents);
        }
        Err(ServiceError::unavailable(
            "too many concurrent payout requests for this user; try again",
            anyhow::anyhow!(
                "admission of {payout_id} lost {MAX_ADMISSION_ATTEMPTS} compare-and-sets"
            ),
        ))
    }

    /// Sets how much of a payout's reservation is given back, in total, under the payout's
    /// release sequence (see [`checks::release`]).
    pub async fn release(
        &self,
        user_id: &str,
        payout_id: &str,
        total_released_cents: i64,
        sequence: i64,
        reason: &str,
    ) -> Result<Released, ServiceError> {
        for _ in 0..MAX_ADMISSION_ATTEMPTS {
            let quota = self.quotas.get(user_id).await?;
            let updated = match checks::release(&quota, payout_id, total_released_cents, sequence) {
                Release::NotFound => {
                    return Ok(Released {
                        applied: false,
                        found: false,
                        held_cents: 0,
                    });
                }
                Release::Unchanged { held_cents } => {
                    return Ok(Released {
                        applied: true,
                        found: true,
                        held_cents,
                    });
                }
                Release::Changed(updated) => updated,
            };
            match self.quotas.put(&updated, quota.version).await {
                Ok(()) => {
                    let held_cents = updated.find(payout_id).map_or(0, |r| r.held_cents());
                    tracing::info!(
                        user_id,
                        payout_id,
                        total_released_cents,
                        sequence,
                        held_cents,
                        reason,
                        "payout quota released"
                    );
                    return Ok(Released {
                        applied: true,
                        found: true,
                        held_cents,
                    });
                }
                Err(error) if error.kind() == ErrorKind::Conflict => {
                    tokio::task::yield_now().await;
                }
                Err(error) => return Err(error),
            }
        }
        Err(ServiceError::conflict(format!(
            "quota of {user_id} keeps changing; try again"
        )))
    }

    /// A creator's balance: earnings against what their payouts hold, and their debt.
    pub async fn balance(
        &self,
        user_id: &str,
    ) -> Result<(UserEarnings, checks::Balance), ServiceError> {
        let (earnings, quota) =
            tokio::join!(self.context.earnings(user_id), self.quotas.get(user_id));
        let earnings = earnings?;
        let balance = checks::balance(&quota?, earnings.lifetime_cents, earnings.payable_cents);
        Ok((earnings, balance))
    }

    /// Re-checks an admitted payout just before its money moves.
    pub async fn recheck(&self, user_id: &str, payout_id: &str) -> Result<Rechecked, ServiceError> {
        // Only earnings matter here: the account's age was the admission's question.
        let earnings = self.context.earnings(user_id).await?;
        let quota = self.quotas.get(user_id).await?;
        if quota.find(payout_id).is_none_or(|r| r.is_released()) {
            return Ok(Rechecked {
                payable: false,
                reason: format!("no quota is held for payout {payout_id}"),
                available_cents: earnings.payable_cents - quota.committed_cents,
            });
        }
        Ok(match checks::recheck(&quota, earnings.payable_cents) {
            Ok(available_cents) => Rechecked {
                payable: true,
                reason: String::new(),
                available_cents,
            },
            Err((available_cents, reason)) => {
                tracing::warn!(user_id, payout_id, %reason, "payout no longer covered");
                Rechecked {
                    payable: false,
                    reason,
                    available_cents,
                }
            }
        })
    }

    async fn record_blocked(
        &self,
        id: String,
        user_id: &str,
        amount_cents: i64,
        decision: &Decision,
    ) -> Result<(), ServiceError> {
        metrics::counter!("payouts_limits_blocked_total", "flag" => decision.flags.last().map_or("", |flag| flag.as_str()))
            .increment(1);
        let attempt = BlockedAttempt {
            id,
            user_id: user_id.to_owned(),
            amount_cents,
            flags: decision.flags.clone(),
            reason: decision.reason.clone(),
            metadata: decision.metadata.clone(),
            attempted_at: self.clock.now(),
        };
        tracing::info!(user_id, amount_cents, reason = %decision.reason, "payout blocked by limits");
        self.blocked_attempts.record(&attempt).await
    }
}

/// The answer to a refused reservation: a decision, or FAILED_PRECONDITION for the balance.
fn refused(
    decision: Decision,
    available_cents: Option<i64>,
    amount_cents: i64,
) -> Result<Reserved, ServiceError> {
    match available_cents {
        Some(available) => Err(ServiceError::failed_precondition(format!(
            "amount of {amount_cents} cents exceeds the available balance of {} cents",
            available.max(0)
        ))),
        None => Ok(Reserved {
            decision,
            reserved: false,
        }),
    }
}
