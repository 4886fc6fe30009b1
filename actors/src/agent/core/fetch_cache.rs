//! The fetcher cache's bookkeeping, pure: which URI is cached under which file, how big the
//! cache is, and which entries leave it, least recently used first, so that it stays within
//! its size bound (Mesos's `--fetcher_cache_size`). The shell owns the files; this names
//! them and decides their fate. A download is written under its final name first
//! ([`FetchCache::new_file`]) and only then admitted, so an entry's file is always complete.
//!
//! "Recently used" is a counter bumped on every hit and store, not a clock: the order of
//! uses is all LRU needs, and it replays identically.

use std::collections::BTreeMap;

/// Mesos's default `--fetcher_cache_size`.
pub const DEFAULT_CACHE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

#[derive(Clone, Debug, PartialEq, Eq)]
struct Entry {
    file: String,
    size: u64,
    last_used: u64,
}

/// What to do with a download meant for the cache.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Keep it; delete the `evict`ed files.
    Store { evict: Vec<String> },
    /// It is bigger than the whole cache: use it once and delete it.
    TooLarge,
}

/// The cache's index; see the module documentation.
#[derive(Clone, Debug)]
pub struct FetchCache {
    max_bytes: u64,
    used_bytes: u64,
    uses: u64,
    next_file: u64,
    entries: BTreeMap<String, Entry>,
}

impl FetchCache {
    pub fn new(max_bytes: u64) -> FetchCache {
        FetchCache { max_bytes, used_bytes: 0, uses: 0, next_file: 0, entries: BTreeMap::new() }
    }

    /// The cached file of `key`, now the most recently used.
    pub fn hit(&mut self, key: &str) -> Option<String> {
        self.uses += 1;
        let uses = self.uses;
        self.entries.get_mut(key).map(|entry| {
            entry.last_used = uses;
            entry.file.clone()
        })
    }

    /// A fresh file name for a download on its way into the cache (never reused).
    pub fn new_file(&mut self) -> String {
        self.next_file += 1;
        format!("c{}", self.next_file)
    }

    /// Takes a finished download of `size` bytes for `key`, written as `file`: the least
    /// recently used entries go until it fits. A key cached meanwhile (two tasks fetching it
    /// at once) is replaced, its old file evicted.
    pub fn admit(&mut self, key: &str, size: u64, file: &str) -> Admission {
        if size > self.max_bytes {
            return Admission::TooLarge;
        }
        let mut evict: Vec<String> = self.remove(key).into_iter().collect();
        while self.used_bytes + size > self.max_bytes {
            let Some(oldest) = self.least_recently_used() else { break };
            evict.extend(self.remove(&oldest));
        }
        self.uses += 1;
        self.entries.insert(key.to_owned(), Entry { file: file.to_owned(), size, last_used: self.uses });
        self.used_bytes += size;
        Admission::Store { evict }
    }

    /// Drops `key` if it is still cached as `file` (which turned out missing or unreadable);
    /// `true` when the caller should delete the file. An entry stored again meanwhile stays.
    pub fn forget(&mut self, key: &str, file: &str) -> bool {
        if self.entries.get(key).is_some_and(|entry| entry.file == file) {
            self.remove(key);
            return true;
        }
        false
    }

    fn remove(&mut self, key: &str) -> Option<String> {
        let entry = self.entries.remove(key)?;
        self.used_bytes -= entry.size;
        Some(entry.file)
    }

    pub fn used_bytes(&self) -> u64 {
        self.used_bytes
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn least_recently_used(&self) -> Option<String> {
        self.entries.iter().min_by_key(|(_, entry)| entry.last_used).map(|(key, _)| key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Stores a download for `key` under a fresh file; returns the file and the evictions.
    fn store(cache: &mut FetchCache, key: &str, size: u64) -> (String, Vec<String>) {
        let file = cache.new_file();
        match cache.admit(key, size, &file) {
            Admission::Store { evict } => (file, evict),
            Admission::TooLarge => panic!("expected {key} to be stored"),
        }
    }

    #[test]
    fn a_stored_uri_is_a_hit_under_its_file() {
        let mut cache = FetchCache::new(100);
        assert_eq!(cache.hit("a"), None);
        let (file, evict) = store(&mut cache, "a", 40);
        assert!(evict.is_empty());
        assert_eq!(cache.hit("a"), Some(file));
        assert_eq!((cache.used_bytes(), cache.len()), (40, 1));
    }

    #[test]
    fn least_recently_used_entries_leave_first() {
        let mut cache = FetchCache::new(100);
        let (a, _) = store(&mut cache, "a", 40);
        let (b, _) = store(&mut cache, "b", 40);
        // `a` is used after `b`, so `b` is now the least recently used.
        assert!(cache.hit("a").is_some());
        let (_, evict) = store(&mut cache, "c", 40);
        assert_eq!(evict, vec![b]);
        assert_eq!(cache.hit("b"), None);
        // Needing 90 bytes evicts both that are left, oldest first.
        let (_, evict) = store(&mut cache, "d", 90);
        assert_eq!(evict.len(), 2);
        assert_eq!(evict[0], a);
        assert_eq!((cache.used_bytes(), cache.len()), (90, 1));
    }

    #[test]
    fn a_download_bigger_than_the_cache_is_not_kept() {
        let mut cache = FetchCache::new(100);
        store(&mut cache, "a", 50);
        let file = cache.new_file();
        assert_eq!(cache.admit("huge", 101, &file), Admission::TooLarge);
        assert!(cache.hit("a").is_some(), "nothing was evicted for it");
        assert_eq!(cache.hit("huge"), None);
        assert_eq!(cache.used_bytes(), 50);
        // Exactly the bound fits.
        let (_, evict) = store(&mut cache, "full", 100);
        assert_eq!(evict.len(), 1);
    }

    #[test]
    fn a_key_stored_twice_replaces_its_old_file() {
        let mut cache = FetchCache::new(100);
        let (first, _) = store(&mut cache, "a", 30);
        let (second, evict) = store(&mut cache, "a", 20);
        assert_ne!(first, second);
        assert_eq!(evict, vec![first]);
        assert_eq!((cache.used_bytes(), cache.len()), (20, 1));
    }

    #[test]
    fn forgetting_a_broken_entry_spares_a_newer_one() {
        let mut cache = FetchCache::new(100);
        let (old, _) = store(&mut cache, "a", 60);
        let (new, _) = store(&mut cache, "a", 60);
        assert!(!cache.forget("a", &old), "the entry was stored again meanwhile");
        assert_eq!(cache.hit("a"), Some(new.clone()));
        assert!(cache.forget("a", &new));
        assert!(!cache.forget("a", &new));
        assert!(cache.is_empty());
        assert_eq!(cache.used_bytes(), 0);
    }

    #[test]
    fn file_names_never_repeat() {
        let mut cache = FetchCache::new(100);
        let names: std::collections::BTreeSet<String> = (0..100).map(|_| cache.new_file()).collect();
        assert_eq!(names.len(), 100);
    }
}
