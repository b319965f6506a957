//! Token buckets in integer milli-tokens, so that refills are exact and tests reproducible.

/// A refill rate and a burst size, in tokens (requests, or bytes for the relay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub per_s: u64,
    pub burst: u64,
}

/// One peer's bucket. Time is the caller's monotonic clock in milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenBucket {
    /// Tokens × 1000: a token per second is exactly one milli-token per millisecond.
    milli: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(rate: Rate, now_ms: u64) -> Self {
        Self {
            milli: rate.burst.saturating_mul(1000),
            last_ms: now_ms,
        }
    }

    fn refill(&mut self, rate: Rate, now_ms: u64) {
        // A clock that steps back refills nothing rather than underflowing.
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.milli = self
            .milli
            .saturating_add(elapsed.saturating_mul(rate.per_s))
            .min(rate.burst.saturating_mul(1000));
        self.last_ms = self.last_ms.max(now_ms);
    }

    /// Takes `cost` tokens, or says in how many milliseconds they will be there.
    pub fn try_take(&mut self, rate: Rate, now_ms: u64, cost: u64) -> Result<(), u64> {
        self.refill(rate, now_ms);
        let cost = cost.saturating_mul(1000);
        if self.milli >= cost {
            self.milli -= cost;
            return Ok(());
        }
        let missing = cost - self.milli;
        Err(
            if rate.per_s == 0 || cost > rate.burst.saturating_mul(1000) {
                u64::MAX
            } else {
                missing.div_ceil(rate.per_s)
            },
        )
    }

    /// Full again: the peer has been idle long enough that forgetting it loses nothing.
    pub fn is_full(&self, rate: Rate, now_ms: u64) -> bool {
        let mut probe = self.clone();
        probe.refill(rate, now_ms);
        probe.milli >= rate.burst.saturating_mul(1000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let rate = Rate {
            per_s: 10,
            burst: 5,
        };
        let mut b = TokenBucket::full(rate, 0);
        for _ in 0..5 {
            b.try_take(rate, 0, 1).unwrap();
        }
        assert_eq!(b.try_take(rate, 0, 1), Err(100));
        assert_eq!(b.try_take(rate, 99, 1), Err(1));
        b.try_take(rate, 100, 1).unwrap();
        assert!(b.is_full(rate, 10_000));
        // More than the burst can never be taken.
        assert_eq!(b.try_take(rate, 10_000, 6), Err(u64::MAX));
    }
}
