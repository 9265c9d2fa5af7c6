//! The per-token rate limiter and the token cache, shared by every request
//! of a replica (`authn` uses them).

use std::num::NonZeroU32;

use uuid::Uuid;

use super::tokens::{self, TokenRecord};

pub type Limiter = governor::DefaultKeyedRateLimiter<String>;

pub fn limiter(per_second: u32) -> Limiter {
    let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(per_second.saturating_mul(2).max(1)).unwrap_or(NonZeroU32::MIN);
    governor::RateLimiter::keyed(governor::Quota::per_second(rate).allow_burst(burst))
}

pub type TokenCache = moka::future::Cache<Uuid, Option<TokenRecord>>;

pub fn token_cache() -> TokenCache {
    moka::future::Cache::builder()
        .max_capacity(100_000)
        .time_to_live(tokens::CACHE_TTL)
        .build()
}
