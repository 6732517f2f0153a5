//! Crash points for the fault-injection tests: `HERALD_FAILPOINTS` names points
//! at which the worker process aborts, like a `kill -9` landing exactly there.
//!
//! Format: comma-separated `point` or `point@n` (abort on the n-th time the
//! point is reached; default the first). Points:
//! - `after_claim`: the message is `sending`, WhatsApp was not called, the
//!   job is not acked.
//! - `after_call`: WhatsApp accepted the message, the outcome is not recorded
//!   (the job was acked at the claim).
//! - `after_commit`: the outcome is recorded, the next job not taken.
//!
//! And `poison=<message id>`: abort every time that message is about to be
//! sent, before anything is claimed (a job that crashes its worker, until the
//! broker dead-letters it).
//!
//! Unset (the normal case) costs one relaxed atomic load per point.

use std::{
    collections::HashMap,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
};

static ARMED: AtomicBool = AtomicBool::new(false);
static POINTS: OnceLock<Mutex<HashMap<String, u64>>> = OnceLock::new();
static POISON: OnceLock<Vec<i64>> = OnceLock::new();

/// Reads `HERALD_FAILPOINTS` once, at start-up.
pub fn init_from_env() {
    let Ok(spec) = std::env::var("HERALD_FAILPOINTS") else {
        return;
    };
    let mut points = HashMap::new();
    let mut poison = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if let Some(id) = item.strip_prefix("poison=") {
            poison.extend(id.parse::<i64>().ok());
            continue;
        }
        let (name, nth) = match item.split_once('@') {
            Some((name, n)) => (name, n.parse().unwrap_or(1)),
            None => (item, 1),
        };
        points.insert(name.to_string(), nth);
    }
    tracing::warn!(
        ?points,
        "failpoints armed: this worker will abort on purpose"
    );
    ARMED.store(!points.is_empty() || !poison.is_empty(), Ordering::Relaxed);
    let _ = POINTS.set(Mutex::new(points));
    let _ = POISON.set(poison);
}

/// Aborts the process if jobs for `message_id` are armed as poison.
pub fn job(message_id: i64) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    if POISON.get().is_some_and(|ids| ids.contains(&message_id)) {
        eprintln!("poison job for message {message_id}: aborting");
        std::process::abort();
    }
}

/// Aborts the process if `point` is armed and this is its n-th hit.
pub fn hit(point: &str) {
    if !ARMED.load(Ordering::Relaxed) {
        return;
    }
    let Some(points) = POINTS.get() else { return };
    let mut points = points.lock().expect("failpoints lock");
    if let Some(remaining) = points.get_mut(point) {
        *remaining -= 1;
        if *remaining == 0 {
            eprintln!("failpoint {point} reached: aborting");
            std::process::abort();
        }
    }
}
