//! Resources as Mesos models them: named scalars (`cpus`, `mem`, `disk`, `gpus`, custom ones)
//! and named ranges (`ports`), optionally reserved for a role.
//!
//! Scalars are kept in thousandths (`cpus:0.5` is 500, `mem:128` is 128,000): Mesos itself
//! rounds scalars to three decimals, and integers make the allocator's arithmetic exact, so
//! "never over-commits" is a property that holds bit for bit.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// The role of unreserved resources.
pub const UNRESERVED: &str = "*";

/// Thousandths per unit of a scalar.
pub const MILLI: u64 = 1000;

/// Inclusive, sorted, non-overlapping, non-adjacent ranges of integers (e.g. ports).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    /// The union of `ranges` (each `(begin, end)` inclusive; reversed pairs are refused).
    pub fn new(ranges: impl IntoIterator<Item = (u64, u64)>) -> Result<Ranges, ResourceError> {
        let mut out = Ranges::default();
        for (begin, end) in ranges {
            if begin > end {
                return Err(ResourceError::Invalid(format!("range {begin}-{end} ends before it begins")));
            }
            out.insert(begin, end);
        }
        Ok(out)
    }

    pub fn single(begin: u64, end: u64) -> Ranges {
        let mut out = Ranges::default();
        out.insert(begin.min(end), end.max(begin));
        out
    }

    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.0.iter().copied()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many integers the ranges hold.
    pub fn count(&self) -> u64 {
        self.0.iter().map(|(b, e)| e - b + 1).sum()
    }

    pub fn contains_value(&self, value: u64) -> bool {
        self.0.iter().any(|&(b, e)| b <= value && value <= e)
    }

    pub fn contains(&self, other: &Ranges) -> bool {
        other.0.iter().all(|&(b, e)| self.0.iter().any(|&(sb, se)| sb <= b && e <= se))
    }

    pub fn insert(&mut self, begin: u64, end: u64) {
        // Past the last range with a gap (how sorted input arrives): nothing to merge, and
        // building ranges from sorted pairs stays linear.
        if self.0.last().is_none_or(|&(_, last)| last.saturating_add(1) < begin) {
            self.0.push((begin, end));
            return;
        }
        let (mut begin, mut end) = (begin, end);
        let mut kept = Vec::with_capacity(self.0.len() + 1);
        for &(b, e) in &self.0 {
            // Overlapping or adjacent ranges merge.
            if e.saturating_add(1) < begin || end.saturating_add(1) < b {
                kept.push((b, e));
            } else {
                begin = begin.min(b);
                end = end.max(e);
            }
        }
        kept.push((begin, end));
        kept.sort_unstable();
        self.0 = kept;
    }

    pub fn union(&mut self, other: &Ranges) {
        if self.0.is_empty() {
            self.0.clone_from(&other.0);
            return;
        }
        for &(b, e) in &other.0 {
            self.insert(b, e);
        }
    }

    /// Removes `other`'s integers (those not present are ignored).
    pub fn subtract(&mut self, other: &Ranges) {
        for &(ob, oe) in &other.0 {
            let mut kept = Vec::with_capacity(self.0.len() + 1);
            for &(b, e) in &self.0 {
                if oe < b || e < ob {
                    kept.push((b, e));
                    continue;
                }
                if b < ob {
                    kept.push((b, ob - 1));
                }
                if oe < e {
                    kept.push((oe + 1, e));
                }
            }
            self.0 = kept;
        }
    }

    /// The first `n` integers (fewer if there are not that many).
    pub fn take(&self, n: u64) -> Ranges {
        let mut out = Ranges::default();
        let mut left = n;
        for &(b, e) in &self.0 {
            if left == 0 {
                break;
            }
            let len = (e - b + 1).min(left);
            out.0.push((b, b + len - 1));
            left -= len;
        }
        out
    }
}

impl fmt::Display for Ranges {
    /// Mesos's text form: `[31000-31005,31010-31010]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, (b, e)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{b}-{e}")?;
        }
        f.write_str("]")
    }
}

/// A bag of resources (of one role, or of no particular role).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// Name → thousandths; never holds a zero.
    scalars: BTreeMap<String, u64>,
    /// Name → ranges; never holds an empty one.
    ranges: BTreeMap<String, Ranges>,
}

impl Resources {
    pub fn new() -> Resources {
        Resources::default()
    }

    /// `cpus`, `mem` (MB), `disk` (MB) and nothing else; a shorthand for tests and benches.
    pub fn cpus_mem_disk(cpus: f64, mem_mb: f64, disk_mb: f64) -> Resources {
        let mut r = Resources::default();
        r.add_scalar("cpus", to_milli(cpus));
        r.add_scalar("mem", to_milli(mem_mb));
        r.add_scalar("disk", to_milli(disk_mb));
        r
    }

    pub fn with_scalar(mut self, name: &str, units: f64) -> Resources {
        self.add_scalar(name, to_milli(units));
        self
    }

    pub fn with_ranges(mut self, name: &str, ranges: Ranges) -> Resources {
        self.add_ranges(name, &ranges);
        self
    }

    pub fn is_empty(&self) -> bool {
        self.scalars.is_empty() && self.ranges.is_empty()
    }

    /// A scalar in thousandths (0 when absent).
    pub fn scalar_milli(&self, name: &str) -> u64 {
        self.scalars.get(name).copied().unwrap_or(0)
    }

    /// A scalar in its own units (`cpus`, MB).
    pub fn scalar(&self, name: &str) -> f64 {
        self.scalar_milli(name) as f64 / MILLI as f64
    }

    pub fn scalars(&self) -> impl Iterator<Item = (&str, u64)> + '_ {
        self.scalars.iter().map(|(k, v)| (k.as_str(), *v))
    }

    pub fn ranges(&self, name: &str) -> Ranges {
        self.ranges.get(name).cloned().unwrap_or_default()
    }

    pub fn all_ranges(&self) -> impl Iterator<Item = (&str, &Ranges)> + '_ {
        self.ranges.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn ports(&self) -> Ranges {
        self.ranges("ports")
    }

    pub fn add_scalar(&mut self, name: &str, milli: u64) {
        if milli > 0 {
            let slot = self.scalars.entry(name.to_owned()).or_insert(0);
            *slot = slot.saturating_add(milli);
        }
    }

    pub fn add_ranges(&mut self, name: &str, ranges: &Ranges) {
        if !ranges.is_empty() {
            self.ranges.entry(name.to_owned()).or_default().union(ranges);
        }
    }

    /// Adds everything in `other`.
    pub fn add(&mut self, other: &Resources) {
        for (name, &v) in &other.scalars {
            self.add_scalar(name, v);
        }
        for (name, r) in &other.ranges {
            self.add_ranges(name, r);
        }
    }

    /// Whether every scalar and range of `other` is here.
    pub fn contains(&self, other: &Resources) -> bool {
        other.scalars.iter().all(|(name, &v)| self.scalar_milli(name) >= v)
            && other.ranges.iter().all(|(name, r)| self.ranges.get(name).is_some_and(|mine| mine.contains(r)))
    }

    /// Removes `other`, saturating at nothing (callers check [`Resources::contains`] first
    /// when a shortfall is an error).
    pub fn subtract(&mut self, other: &Resources) {
        for (name, &v) in &other.scalars {
            if let Some(slot) = self.scalars.get_mut(name) {
                *slot = slot.saturating_sub(v);
                if *slot == 0 {
                    self.scalars.remove(name);
                }
            }
        }
        for (name, r) in &other.ranges {
            if let Some(mine) = self.ranges.get_mut(name) {
                mine.subtract(r);
                if mine.is_empty() {
                    self.ranges.remove(name);
                }
            }
        }
    }

    /// `self - other`, or what is missing when `other` is not contained.
    pub fn checked_sub(&self, other: &Resources) -> Result<Resources, Resources> {
        if self.contains(other) {
            let mut left = self.clone();
            left.subtract(other);
            Ok(left)
        } else {
            let mut missing = other.clone();
            missing.subtract(self);
            Err(missing)
        }
    }

    /// The scalars only, as a plain map of thousandths.
    pub fn scalar_map(&self) -> &BTreeMap<String, u64> {
        &self.scalars
    }

    /// The largest fraction of `total` this bag takes, over the scalars `total` has (DRF's
    /// dominant share).
    pub fn dominant_share(&self, total: &Resources) -> f64 {
        self.scalars
            .iter()
            .filter_map(|(name, &v)| {
                let t = total.scalar_milli(name);
                (t > 0).then(|| v as f64 / t as f64)
            })
            .fold(0.0, f64::max)
    }
}

impl fmt::Display for Resources {
    /// Mesos's text form without roles: `cpus:2;mem:512;ports:[31000-32000]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        let mut sep = |f: &mut fmt::Formatter<'_>| {
            let s = if first { "" } else { ";" };
            first = false;
            f.write_str(s)
        };
        for (name, &v) in &self.scalars {
            sep(f)?;
            write!(f, "{name}:{}", format_milli(v))?;
        }
        for (name, r) in &self.ranges {
            sep(f)?;
            write!(f, "{name}:{r}")?;
        }
        Ok(())
    }
}

/// Resources by the role they are reserved for ([`UNRESERVED`] for none).
pub type RoleResources = BTreeMap<String, Resources>;

/// `units` in thousandths, rounded to the nearest (negative and non-finite values are 0).
pub fn to_milli(units: f64) -> u64 {
    if units.is_finite() && units > 0.0 { (units * MILLI as f64).round() as u64 } else { 0 }
}

/// Thousandths as the shortest decimal (`1500` → `1.5`).
pub fn format_milli(milli: u64) -> String {
    let (whole, frac) = (milli / MILLI, milli % MILLI);
    if frac == 0 {
        whole.to_string()
    } else {
        format!("{whole}.{frac:03}").trim_end_matches('0').to_owned()
    }
}

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ResourceError {
    #[error("invalid resources: {0}")]
    Invalid(String),
}

/// Parses Mesos's text form, roles included: `cpus:24;mem:24576;ports:[21000-24000,30000-34000];cpus(ads):8`.
/// Scalars take up to three decimals; sets (`{a,b}`) are refused. Repeated entries add up.
pub fn parse_resources(text: &str) -> Result<RoleResources, ResourceError> {
    let mut out = RoleResources::new();
    for item in text.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        let (head, value) =
            item.split_once(':').ok_or_else(|| invalid(format!("`{item}` is not of the form name:value")))?;
        let (name, role) = parse_name_and_role(head.trim())?;
        let value = value.trim();
        let bag = out.entry(role).or_default();
        if let Some(inner) = value.strip_prefix('[') {
            let inner =
                inner.strip_suffix(']').ok_or_else(|| invalid(format!("`{item}`: a range list must end with ]")))?;
            bag.add_ranges(&name, &parse_ranges(inner).map_err(|e| invalid(format!("`{item}`: {e}")))?);
        } else if value.starts_with('{') {
            return Err(invalid(format!("`{item}`: set resources are not supported")));
        } else {
            let units: f64 = value.parse().map_err(|_| invalid(format!("`{item}`: `{value}` is not a number")))?;
            if !units.is_finite() || units < 0.0 {
                return Err(invalid(format!("`{item}`: a scalar must be a non-negative number")));
            }
            bag.add_scalar(&name, to_milli(units));
        }
    }
    out.retain(|_, bag| !bag.is_empty());
    Ok(out)
}

fn invalid(message: String) -> ResourceError {
    ResourceError::Invalid(message)
}

fn parse_name_and_role(head: &str) -> Result<(String, String), ResourceError> {
    let (name, role) = match head.split_once('(') {
        Some((name, rest)) => {
            let role = rest.strip_suffix(')').ok_or_else(|| invalid(format!("`{head}`: a role must end with )")))?;
            validate_role(role)?;
            (name, role.to_owned())
        }
        None => (head, UNRESERVED.to_owned()),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.') {
        return Err(invalid(format!("`{name}` is not a valid resource name")));
    }
    Ok((name.to_owned(), role))
}

/// Mesos's role names: `*`, or path segments of printable characters without `.`-only
/// segments, whitespace, `/` at either end, `\\` or a leading `-`.
pub fn validate_role(role: &str) -> Result<(), ResourceError> {
    if role == UNRESERVED {
        return Ok(());
    }
    let bad = role.is_empty()
        || role.starts_with('/')
        || role.ends_with('/')
        || role.starts_with('-')
        || role.chars().any(|c| c.is_whitespace() || c.is_control() || c == '\\' || c == '*')
        || role.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if bad { Err(invalid(format!("`{role}` is not a valid role name"))) } else { Ok(()) }
}

/// `21000-24000,30000-34000` (without the brackets).
pub fn parse_ranges(text: &str) -> Result<Ranges, ResourceError> {
    let mut pairs = Vec::new();
    for part in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (b, e) = part.split_once('-').unwrap_or((part, part));
        let num = |s: &str| s.trim().parse::<u64>().map_err(|_| invalid(format!("`{part}` is not a range")));
        pairs.push((num(b)?, num(e)?));
    }
    Ranges::new(pairs)
}
