//! The limits service core: read-only validation, and admission (checks + reservation) as
//! one compare-and-set on the user's quota document.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use async_trait::async_trait;
use payouts_proto::disputes::v1::GetEarningsRequest;
use payouts_proto::disputes::v1::disputes_service_client::DisputesServiceClient;
use payouts_proto::payouts::v1::GetAccountRequest;
use payouts_proto::payouts::v1::payouts_service_client::PayoutsServiceClient;
use payouts_runtime::grpc::{TracedChannel, traced_channel};
use payouts_runtime::{Clock, ErrorKind, ServiceError, ServiceName, Settings};

use crate::checks::{self, Admission, Decision, UserContext};
use crate::domain::{BlockedAttempt, LimitConfig};
use crate::store::{BlockedAttemptRepository, QuotaRepository};

/// Where the checks learn a user's account age and earnings.
#[async_trait]
pub trait ContextSource: Send + Sync + 'static {
    async fn context(&self, user_id: &str) -> Result<UserContext, ServiceError>;
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
            payouts: PayoutsServiceClient::new(traced_channel(
                settings.service_url(ServiceName::Payouts),
            )?),
            disputes: DisputesServiceClient::new(traced_channel(
                settings.service_url(ServiceName::Disputes),
            )?),
        })
    }
}

#[async_trait]
impl ContextSource for GrpcContext {
    async fn context(&self, user_id: &str) -> Result<UserContext, ServiceError> {
        let account = self
            .payouts
            .clone()
            .get_account(GetAccountRequest {
                user_id: user_id.to_owned(),
            })
            .await;
        let account_created_at = match account {
            Ok(response) => response
                .into_inner()
                .account
                .and_then(|account| account.account_created_at)
                .and_then(|at| {
                    chrono::DateTime::from_timestamp(
                        at.seconds,
                        u32::try_from(at.nanos).unwrap_or(0),
                    )
                }),
            Err(status) if status.code() == tonic::Code::NotFound => None,
            Err(status) => return Err(ServiceError::from_remote("payouts", &status)),
        };
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
        Ok(UserContext {
            account_created_at,
            lifetime_earnings_cents: earnings.lifetime.map_or(0, |money| money.cents),
            payable_earnings_cents: earnings.active.map_or(0, |money| money.cents),
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

/// How many times an admission that lost a compare-and-set is retried.
const MAX_ADMISSION_ATTEMPTS: u32 = 100;

/// The limits service core.
pub struct Limits {
    config: LimitConfig,
    quotas: Arc<dyn QuotaRepository>,
    blocked_attempts: Arc<dyn BlockedAttemptRepository>,
    context: Arc<dyn ContextSource>,
    clock: Arc<dyn Clock>,
}

impl Limits {
    pub fn new(
        config: LimitConfig,
        quotas: Arc<dyn QuotaRepository>,
        blocked_attempts: Arc<dyn BlockedAttemptRepository>,
        context: Arc<dyn ContextSource>,
        clock: Arc<dyn Clock>,
    ) -> Self {
        Self {
            config,
            quotas,
            blocked_attempts,
            context,
            clock,
        }
    }

    pub fn config(&self) -> &LimitConfig {
        &self.config
    }

    pub fn blocked_attempts(&self) -> &Arc<dyn BlockedAttemptRepository> {
        &self.blocked_attempts
    }

    /// Would this payout be allowed now? Read-only, except that a blocked attempt is recorded.
    pub async fn validate(
        &self,
        user_id: &str,
        amount_cents: i64,
    ) -> Result<Decision, ServiceError> {
        let context = self.context.context(user_id).await?;
        let quota = self.quotas.get(user_id).await?;
        let decision = checks::evaluate(
            &self.config,
            &quota,
            &context,
            amount_cents,
            self.clock.now(),
        );
        if !decision.allowed {
            self.record_blocked(user_id, amount_cents, &decision)
                .await?;
        }
        Ok(decision)
    }

    /// The checks and the reservation as one atomic step per user; idempotent on the payout.
    /// An amount above the user's available balance is FAILED_PRECONDITION.
    pub async fn reserve(
        &self,
        user_id: &str,
        payout_id: &str,
        amount_cents: i64,
    ) -> Result<Reserved, ServiceError> {
        let context = self.context.context(user_id).await?;
        for attempt in 0..MAX_ADMISSION_ATTEMPTS {
            let quota = self.quotas.get(user_id).await?;
            let now = self.clock.now();
            match checks::admit(&self.config, &quota, &context, payout_id, amount_cents, now) {
                Admission::AlreadyAdmitted { decision } => {
                    return Ok(Reserved {
                        decision,
                        reserved: true,
                    });
                }
                Admission::Refused { decision } => {
                    self.record_blocked(user_id, amount_cents, &decision)
                        .await?;
                    return Ok(Reserved {
                        decision,
                        reserved: false,
                    });
                }
                Admission::InsufficientBalance {
                    available_cents, ..
                } => {
                    return Err(ServiceError::failed_precondition(format!(
                        "amount of {amount_cents} cents exceeds the available balance of {} cents",
                        available_cents.max(0)
                    )));
                }
                Admission::Admitted {
                    decision,
                    quota: admitted,
                } => {
                    match self.quotas.put(&admitted, quota.version).await {
                        Ok(()) => {
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
                        Err(error) if error.kind() == ErrorKind::Conflict => {
                            // Another admission of this user won; decide again on its result.
                            tokio::time::sleep(StdDuration::from_micros(
                                200 * u64::from(attempt % 10 + 1),
                            ))
                            .await;
                        }
                        Err(error) => return Err(error),
                    }
                }
            }
        }
        Err(ServiceError::unavailable(
            "too many concurrent payout requests for this user; try again",
            anyhow::anyhow!(
                "admission of {payout_id} lost {MAX_ADMISSION_ATTEMPTS} compare-and-sets"
            ),
        ))
    }

    /// Gives back a payout's quota (all of it, or `cents` of it). `false` when nothing was held.
    pub async fn release(
        &self,
        user_id: &str,
        payout_id: &str,
        cents: Option<i64>,
        reason: &str,
    ) -> Result<bool, ServiceError> {
        for _ in 0..MAX_ADMISSION_ATTEMPTS {
            let quota = self.quotas.get(user_id).await?;
            let Some(released) = checks::release(&quota, payout_id, cents) else {
                return Ok(false);
            };
            match self.quotas.put(&released, quota.version).await {
                Ok(()) => {
                    tracing::info!(user_id, payout_id, reason, "payout quota released");
                    return Ok(true);
                }
                Err(error) if error.kind() == ErrorKind::Conflict => {}
                Err(error) => return Err(error),
            }
        }
        Err(ServiceError::conflict(format!(
            "quota of {user_id} keeps changing; try again"
        )))
    }

    async fn record_blocked(
        &self,
        user_id: &str,
        amount_cents: i64,
        decision: &Decision,
    ) -> Result<(), ServiceError> {
        metrics::counter!("payouts_limits_blocked_total", "flag" => decision.flags.last().map_or("", |flag| flag.as_str()))
            .increment(1);
        let attempt = BlockedAttempt {
            id: uuid::Uuid::now_v7().to_string(),
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
