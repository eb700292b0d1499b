//! How much of a shared budget a daemon may hold: the lease arithmetic, apart from the database.
//!
//! A lease is absolute: "this daemon may have spent up to G in the period". Everything granted is
//! committed the moment it is granted, so the team's spend can pass the limit only by what a
//! request cost beyond the estimate it reserved (zero when the estimate bounds its output). A
//! lease the daemon let lapse still counts as granted for `grace` after its end, so that a request
//! reserved just before the end and settled after it finds its money still set aside; after that,
//! only what the daemon reported spending counts.

/// One dimension (money in micros, or tokens) of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Held {
    pub granted: i64,
    pub used: i64,
    /// Still set aside: within its time to live plus the grace.
    pub live: bool,
}

impl Held {
    /// What the lease takes from the pool.
    pub fn committed(&self) -> i64 {
        if self.live { self.granted.max(self.used) } else { self.used }
    }
}

/// How big a slice is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// The share of what is left that one grant may take.
    pub share_percent: u8,
    /// The most one grant adds (the documented bound on what one daemon can hold unspent).
    pub max_slice: i64,
    /// The least a grant adds while that much is left (so a nearly spent budget is not leased out
    /// in crumbs, one renewal per request).
    pub min_slice: i64,
}

/// The outcome of a lease request in one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    /// The daemon's new absolute allowance.
    pub granted: i64,
    /// What the team has left to lease after it.
    pub left: i64,
}

/// A grant for a daemon that reports `used` and holds `mine`, while the others hold `others`.
pub fn grant(limit: i64, others: impl IntoIterator<Item = Held>, mine: Option<Held>, used: i64, terms: Terms) -> Grant {
    let committed_others: i64 = others.into_iter().map(|h| h.committed()).fold(0i64, i64::saturating_add);
    // A report lower than what the server already knows (a retried, older request) changes nothing.
    let used = mine.map_or(used, |m| m.used.max(used)).max(0);
    let held = match mine {
        Some(m) if m.live => m.granted.max(used),
        _ => used,
    };
    let left = limit.saturating_sub(committed_others).saturating_sub(used);
    let extra = if left <= 0 {
        0
    } else {
        let share = (i128::from(left) * i128::from(terms.share_percent) / 100) as i64;
        share.max(terms.min_slice).min(terms.max_slice).min(left)
    };
    let granted = held.max(used.saturating_add(extra));
    Grant { granted, left: limit.saturating_sub(committed_others).saturating_sub(granted).max(0) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TERMS: Terms = Terms { share_percent: 25, max_slice: 1_000, min_slice: 10 };

    fn live(granted: i64, used: i64) -> Held {
        Held { granted, used, live: true }
    }

    #[test]
    fn a_first_grant_is_a_share_of_what_is_left_bounded_by_the_slice() {
        assert_eq!(grant(10_000, [], None, 0, TERMS), Grant { granted: 1_000, left: 9_000 });
        assert_eq!(grant(2_000, [], None, 0, TERMS), Grant { granted: 500, left: 1_500 });
        assert_eq!(grant(2_000, [live(1_000, 200)], None, 0, TERMS), Grant { granted: 250, left: 750 });
    }

    #[test]
    fn the_sum_of_grants_never_passes_the_limit_however_many_daemons_ask() {
        let limit = 5_000;
        let mut held: Vec<Held> = Vec::new();
        for round in 0..200 {
            let me = round % 7;
            while held.len() <= me {
                held.push(Held::default());
            }
            // Each daemon spends all it holds, then renews.
            held[me].used = held[me].granted;
            let others: Vec<Held> = held.iter().enumerate().filter(|(i, _)| *i != me).map(|(_, h)| *h).collect();
            let g = grant(limit, others, Some(held[me]), held[me].used, TERMS);
            held[me] = live(g.granted, held[me].used);
            let total: i64 = held.iter().map(Held::committed).sum();
            assert!(total <= limit, "round {round}: {total} committed");
        }
        assert_eq!(held.iter().map(Held::committed).sum::<i64>(), limit, "all of it is leased out in the end");
    }

    #[test]
    fn a_retried_request_grants_nothing_more_and_a_lease_never_shrinks_while_live() {
        let first = grant(10_000, [], None, 0, TERMS);
        let again = grant(10_000, [], Some(live(first.granted, 0)), 0, TERMS);
        assert_eq!(again.granted, first.granted, "same report, same grant");
        // Others took the rest meanwhile: the live lease keeps what it had.
        let squeezed = grant(10_000, [live(9_000, 0)], Some(live(first.granted, 0)), 0, TERMS);
        assert_eq!(squeezed.granted, first.granted);
        assert_eq!(squeezed.left, 0);
        // An older report (lower used) does not lower what the server knows.
        assert_eq!(grant(10_000, [], Some(live(1_000, 800)), 100, TERMS).granted, 800 + 1_000);
    }

    #[test]
    fn a_lapsed_lease_counts_only_what_was_spent_and_a_spent_pool_grants_nothing() {
        let lapsed = Held { granted: 4_000, used: 1_000, live: false };
        assert_eq!(grant(5_000, [lapsed], None, 0, TERMS).granted, 1_000, "25% of 4,000 left");
        let spent = grant(1_000, [live(900, 900)], None, 100, TERMS);
        assert_eq!(spent, Grant { granted: 100, left: 0 }, "only what it already spent");
        // Spend beyond the grant (a request that cost more than its estimate) is counted as it is.
        let over = grant(1_000, [live(600, 700)], None, 400, TERMS);
        assert_eq!(over.granted, 400);
        assert_eq!(over.left, 0);
    }

    #[test]
    fn near_the_end_a_grant_takes_the_minimum_slice_or_what_is_left() {
        assert_eq!(grant(1_000, [live(980, 980)], None, 0, TERMS).granted, 10, "the minimum slice, not 5");
        assert_eq!(grant(1_000, [live(995, 995)], None, 0, TERMS).granted, 5, "what is left");
    }
}
