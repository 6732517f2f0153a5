//! What a refusal from WhatsApp's server means for the message and the number.

use std::time::Duration;

/// The classes of server refusal codes Herald acts on differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `463`: the number may not start new conversations for a while (a
    /// "reach-out time-lock"). The message did nothing wrong: another number,
    /// or this one later, can send it.
    ReachoutTimelock,
    /// The recipient does not use WhatsApp. Final.
    NotOnWhatsApp,
    /// The server is overloaded or rate-limiting: try again later.
    Transient,
    /// Anything else: the server will keep refusing this message.
    Permanent,
}

pub fn classify(code: &str) -> Refusal {
    match code {
        "463" => Refusal::ReachoutTimelock,
        "404" => Refusal::NotOnWhatsApp,
        "429" | "500" | "503" | "504" => Refusal::Transient,
        _ => Refusal::Permanent,
    }
}

/// Wait before the `attempt`-th retry (1-based): `base`, doubling each time,
/// never above `max`.
pub fn retry_delay(attempt: i32, base: Duration, max: Duration) -> Duration {
    let exponent = attempt.saturating_sub(1).clamp(0, 30) as u32;
    base.saturating_mul(2u32.saturating_pow(exponent)).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        assert_eq!(classify("463"), Refusal::ReachoutTimelock);
        assert_eq!(classify("404"), Refusal::NotOnWhatsApp);
        assert_eq!(classify("503"), Refusal::Transient);
        assert_eq!(classify("479"), Refusal::Permanent);
    }

    #[test]
    fn retry_delays_double_up_to_the_limit() {
        let s = Duration::from_secs;
        let delays: Vec<Duration> = (1..=8).map(|a| retry_delay(a, s(30), s(600))).collect();
        assert_eq!(
            delays,
            [s(30), s(60), s(120), s(240), s(480), s(600), s(600), s(600)]
        );
        assert_eq!(retry_delay(0, s(30), s(600)), s(30));
        assert_eq!(retry_delay(i32::MAX, s(30), s(600)), s(600));
    }
}
