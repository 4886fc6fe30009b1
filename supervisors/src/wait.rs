//! Waiting on a condition with a bound, on tokio's clock (virtual under paused time), for
//! tests and simulations: nothing in them sleeps a guessed duration.

use std::time::Duration;

/// Polls `check` every 5 ms until it gives a value; panics after `bound` naming `what`, so a
/// test fails with what it waited for.
pub async fn wait_until<T>(what: &str, bound: Duration, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {bound:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
