//! What the integration tests that run the `flotilla` binary share: its stdout as a stream of
//! lines, and the wait for `flotilla dev` to say it serves.
//!
//! Each test crate includes this module (`mod support;`) and uses part of it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// The lines `child` prints on stdout (which must be piped), read on a thread of their own so
/// that a test can wait for one with a bound.
pub fn stdout_lines(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().expect("the child's stdout is piped");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end even when nobody listens any more: a child blocked on a full pipe
        // would hang.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    lines
}

/// Every line up to and including `flotilla dev: ready`, each within `bound`.
pub fn lines_until_ready(lines: &Receiver<String>, bound: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line =
            lines.recv_timeout(bound).unwrap_or_else(|_| panic!("flotilla dev is ready within {bound:?}: {seen:?}"));
        let ready = line.starts_with("flotilla dev: ready");
        seen.push(line);
        if ready {
            return seen;
        }
    }
}
