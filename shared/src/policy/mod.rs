//! The pacing policy's rules, as pure functions the scheduler, the worker and
//! the API share: where a recipient lives in time and when they may be
//! written to ([`zones`]), how fast a new number may grow ([`warmup`]), how
//! much a number may still send today ([`allowance`]), how sends are spaced
//! ([`jitter`]), when a number is slowed or stopped ([`breaker`]), what a
//! refusal from WhatsApp means ([`verdict`]), and when a campaign would end
//! ([`projection`]).

pub mod allowance;
pub mod breaker;
pub mod jitter;
pub mod projection;
pub mod verdict;
pub mod warmup;
pub mod zones;
