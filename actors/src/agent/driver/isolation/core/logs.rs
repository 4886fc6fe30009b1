//! Size rotation of a task's `stdout` and `stderr`, as decisions the shim carries out.
//!
//! A file grows to `max_bytes`, then is renamed `<name>.1` (older ones shift up to
//! `<name>.<keep>`; the oldest is dropped) and a new file starts. A chunk that does not fit
//! is split at the limit, so no file ever exceeds it; with `max_bytes = 0` nothing rotates.

/// One step of appending a chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogStep {
    /// Write the next `n` bytes of the chunk to the current file.
    Write(usize),
    /// Rotate: shift the files ([`rotation_renames`]) and start an empty current file.
    Rotate,
}

/// The steps to append `incoming` bytes to a current file of `current` bytes.
pub fn plan_append(current: u64, incoming: usize, max_bytes: u64) -> Vec<LogStep> {
    if max_bytes == 0 {
        return if incoming == 0 { Vec::new() } else { vec![LogStep::Write(incoming)] };
    }
    let mut steps = Vec::new();
    let mut size = current;
    let mut left = incoming;
    while left > 0 {
        if size >= max_bytes {
            steps.push(LogStep::Rotate);
            size = 0;
        }
        let room = usize::try_from(max_bytes - size).unwrap_or(usize::MAX);
        let n = left.min(room);
        steps.push(LogStep::Write(n));
        size += n as u64;
        left -= n;
    }
    steps
}

/// The renames of one rotation, oldest first, as `(from, to)` suffix numbers where 0 is the
/// current file: with `keep = 3`, `2 → 3`, `1 → 2`, `0 → 1` (the rename onto `.3` drops the
/// oldest). With `keep = 0` there is no rename: the current file is simply truncated.
pub fn rotation_renames(keep: u32) -> Vec<(u32, u32)> {
    (0..keep).rev().map(|from| (from, from + 1)).collect()
}

/// The file name of suffix `index` (0: the current file).
pub fn rotated_name(base: &str, index: u32) -> String {
    if index == 0 { base.to_owned() } else { format!("{base}.{index}") }
}
