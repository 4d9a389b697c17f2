//! Exact proportional reductions (design §3): a refund takes back its share of the charge from
//! the allocations the charge funded, in whole cents, so that the reductions add up exactly
//! to the amount taken, no allocation loses more than it has, and the same input always
//! gives the same split.
//!
//! Largest remainder (Hamilton): each allocation first gets the whole cents of its exact
//! share; the cents left over go one each to the largest fractional parts, ties to the
//! earlier allocation. A later partial refund is split the same way over what each
//! allocation still has (its increment, not the new cumulative total: re-splitting the
//! total could take back less from one allocation than before, the "Alabama paradox").

/// Splits `total` cents across `amounts` (what each allocation still has) in proportion to
/// them. The shares add up to `total` exactly (clamped to `0..=sum(amounts)`), each share
/// is at most its amount, and negative amounts count as zero.
pub fn proportional(total: i64, amounts: &[i64]) -> Vec<i64> {
    let amounts: Vec<i128> = amounts.iter().map(|&a| i128::from(a.max(0))).collect();
    let sum: i128 = amounts.iter().sum();
    let total = i128::from(total).clamp(0, sum);
    if sum == 0 || total == 0 {
        return vec![0; amounts.len()];
    }
    let mut shares: Vec<i128> = amounts.iter().map(|a| total * a / sum).collect();
    let mut left = total - shares.iter().sum::<i128>();
    // The fractional parts, as numerators over `sum`, largest first; ties by position.
    let mut order: Vec<(i128, usize)> = amounts
        .iter()
        .enumerate()
        .map(|(index, a)| (total * a % sum, index))
        .collect();
    order.sort_by(|x, y| y.0.cmp(&x.0).then(x.1.cmp(&y.1)));
    for (remainder, index) in order {
        if left == 0 || remainder == 0 {
            break;
        }
        shares[index] += 1;
        left -= 1;
    }
    shares
        .into_iter()
        .map(|share| i64::try_from(share).unwrap_or(i64::MAX))
        .collect()
}

/// The part of a charge's allocations a cumulative refund takes back: `amount_refunded /
/// amount` of `funded` (what the charge's allocations were credited), rounded down to the
/// cent (never more than refunded). `None` for a charge amount that is not positive.
pub fn refunded_share(funded: i64, amount_refunded: i64, amount: i64) -> Option<i64> {
    if amount <= 0 {
        return None;
    }
    let refunded = i128::from(amount_refunded.clamp(0, amount));
    let share = i128::from(funded.max(0)) * refunded / i128::from(amount);
    i64::try_from(share).ok()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_cents_left_over_go_to_the_largest_remainders() {
        // 100 over three equal allocations: 33.33 each; one cent left, to the first.
        assert_eq!(proportional(100, &[1_000, 1_000, 1_000]), [34, 33, 33]);
        // 10 over 1:2:3 -> 1.67, 3.33, 5.00: the cent left goes to the 0.67.
        assert_eq!(proportional(10, &[100, 200, 300]), [2, 3, 5]);
        assert_eq!(proportional(0, &[5, 5]), [0, 0]);
        assert_eq!(proportional(7, &[]), Vec::<i64>::new());
        assert_eq!(proportional(50, &[0, 0]), [0, 0]);
        // More than there is: everything, and no more.
        assert_eq!(proportional(1_000, &[3, 4]), [3, 4]);
        assert_eq!(
            proportional(5, &[-10, 10]),
            [0, 5],
            "a negative amount counts as zero"
        );
    }

    #[test]
    fn a_refund_takes_its_share_of_the_charge_rounded_down() {
        // $30 charge funding $27 of allocations (after fees); $10 refunded: $9 taken back.
        assert_eq!(refunded_share(27_00, 10_00, 30_00), Some(9_00));
        assert_eq!(refunded_share(100, 1, 3), Some(33), "33.3 rounds down");
        assert_eq!(
            refunded_share(100, 5, 3),
            Some(100),
            "never more than the whole"
        );
        assert_eq!(refunded_share(100, 1, 0), None);
    }

    proptest! {
        #[test]
        fn shares_add_up_exactly_and_never_exceed_an_allocation(
            amounts in proptest::collection::vec(0_i64..10_000_000_00, 0..40),
            fraction in 0_u32..=1_000,
        ) {
            let sum: i64 = amounts.iter().sum();
            let total = sum / 1_000 * i64::from(fraction);
            let shares = proportional(total, &amounts);
            prop_assert_eq!(shares.len(), amounts.len());
            prop_assert_eq!(shares.iter().sum::<i64>(), total);
            for (share, amount) in shares.iter().zip(&amounts) {
                prop_assert!(*share >= 0 && share <= amount);
            }
            prop_assert_eq!(proportional(total, &amounts), shares, "deterministic");
        }

        #[test]
        fn each_share_is_within_a_cent_of_its_exact_share(
            amounts in proptest::collection::vec(1_i64..1_000_000, 1..20),
            total in 0_i64..1_000_000,
        ) {
            let sum: i128 = amounts.iter().map(|&a| i128::from(a)).sum();
            let total = i128::from(total).min(sum);
            let shares = proportional(i64::try_from(total).unwrap(), &amounts);
            for (share, amount) in shares.iter().zip(&amounts) {
                let exact_floor = total * i128::from(*amount) / sum;
                let share = i128::from(*share);
                prop_assert!(share == exact_floor || share == exact_floor + 1);
            }
        }

        #[test]
        fn refunds_in_steps_take_exactly_what_one_refund_of_the_total_would(
            amounts in proptest::collection::vec(1_i64..100_000, 1..10),
            steps in proptest::collection::vec(0_i64..50_000, 1..5),
        ) {
            // Each step splits its increment over what is left; the total taken is the sum
            // of the increments, and nothing ever goes below zero.
            let mut left = amounts.clone();
            let mut taken = 0;
            for step in steps {
                let shares = proportional(step, &left);
                let step_taken: i64 = shares.iter().sum();
                for (remaining, share) in left.iter_mut().zip(&shares) {
                    *remaining -= share;
                    prop_assert!(*remaining >= 0);
                }
                taken += step_taken;
            }
            let before: i64 = amounts.iter().sum();
            let after: i64 = left.iter().sum();
            prop_assert_eq!(before - after, taken);
        }
    }
}
