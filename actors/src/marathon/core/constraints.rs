//! Placement constraints: an app's `constraints` (`[field, OPERATOR(, value)]`), parsed into
//! typed rules and matched against a candidate agent and the agents the app's instances
//! already sit on.
//!
//! # Fields
//!
//! `hostname` or `@hostname` read the agent's hostname, `@region` and `@zone` its fault
//! domain, and anything else the agent attribute of that name. Attributes are compared as
//! Marathon compares them, by a text form: text as is; scalars rounded to thousandths,
//! half-to-even on the exact binary value, without trailing zeros (`0.80` → `0.8`, `1.0005` →
//! `1`, `1.1005` → `1.101`, as Java's `DecimalFormat("0.###")`); ranges as `[b-e,...]`
//! (coalesced and sorted, as Mesos stores them); sets as `{a,b}` with the items sorted.
//!
//! An agent that lacks the field satisfies `UNLIKE` only; every other operator refuses it.
//!
//! # Operators
//!
//! - `UNIQUE` (no value): no placed instance has the candidate's value.
//! - `CLUSTER value`: the candidate's value is exactly `value` (text comparison, no scalar
//!   normalisation). `CLUSTER` without a value (or with `""`): anything for the first
//!   instance, then the value of the first placed instance.
//! - `GROUP_BY n`: spread over `n` values of the field, Marathon 1.10's way: with a target of
//!   `T` instances each group may take `T / n`, and `T % n` groups one more; a new value is
//!   taken while fewer than `n` values are in use. `GROUP_BY` without a value: every value not
//!   yet used is welcome, and a used one only while it holds no more instances than the
//!   least-used value (Marathon before 1.10; 1.10 divides by zero there).
//! - `LIKE regex` / `UNLIKE regex`: the value matches (does not match) the whole regex.
//! - `MAX_PER n`: fewer than `n` placed instances share the candidate's value.
//! - `IS value`: the candidate's value equals `value`; a numeric `value` (`[0-9]+(.[0-9]+)?`)
//!   is first rounded like a scalar attribute, so `IS 0.80` matches `level:0.8`.
//!
//! Placed instances with no value for the field form a group of their own (the `None`
//! group) for `GROUP_BY` and never collide with a candidate for `UNIQUE` and `MAX_PER`.
//!
//! # Where Flotilla differs from Marathon
//!
//! - Regexes are `regex-lite`'s dialect (no `\p{..}` classes, no look-around, no
//!   back-references) rather than Java's; a pattern they cannot express is refused when the
//!   constraint is parsed, never silently mismatched.
//! - `LIKE`/`UNLIKE` with an empty value, and `IS` without a value, are refused (Marathon
//!   accepts them, and then never places the app).
//! - `GROUP_BY` with no value, `0` or a negative value uses the pre-1.10 even spread (above).
//! - An attribute text that Mesos would refuse (`[a-b]`, `{a`) is compared as text.

use std::collections::BTreeMap;
use std::fmt;

use regex_lite::{Regex, RegexBuilder};

use crate::mesos::core::Ranges;

/// The field name that reads the agent's hostname (`hostname` works too).
pub const HOSTNAME_FIELD: &str = "@hostname";
/// The field name that reads the agent's fault-domain region.
pub const REGION_FIELD: &str = "@region";
/// The field name that reads the agent's fault-domain zone.
pub const ZONE_FIELD: &str = "@zone";

/// The most compiled-regex memory one `LIKE`/`UNLIKE` may take: app definitions are
/// untrusted input, and a pattern like `(a{100}){100}` must be refused, not built.
pub const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// The deepest nesting of groups and repetitions a constraint regex may have.
pub const REGEX_NEST_LIMIT: u32 = 50;

/// The value of one Mesos agent attribute.
#[derive(Clone, Debug, PartialEq)]
pub enum AttributeValue {
    Text(String),
    Scalar(f64),
    Ranges(Ranges),
    /// Items in the order given; sorted when formatted.
    Set(Vec<String>),
}

impl AttributeValue {
    /// Reads an attribute's value from Mesos's text form (`r1`, `0.8`, `[1-5,10-20]`, `{a,b}`),
    /// as Mesos does: spaces dropped, `[` starts ranges, `{` a set, a finite number is a
    /// scalar, anything else text. Ranges or sets Mesos would refuse are kept as text.
    pub fn parse(text: &str) -> AttributeValue {
        let compact: String = text.chars().filter(|&c| c != ' ').collect();
        if compact.starts_with('[') {
            return parse_ranges(&compact).map_or(AttributeValue::Text(compact), AttributeValue::Ranges);
        }
        if compact.starts_with('{') {
            return parse_set(&compact).map_or(AttributeValue::Text(compact), AttributeValue::Set);
        }
        match parse_scalar(&compact) {
            Some(value) => AttributeValue::Scalar(value),
            None => AttributeValue::Text(compact),
        }
    }

    /// The text constraints compare (see the module documentation).
    pub fn constraint_text(&self) -> String {
        match self {
            AttributeValue::Text(text) => text.clone(),
            AttributeValue::Scalar(value) => format_scalar(*value),
            AttributeValue::Ranges(ranges) => {
                let parts: Vec<String> = ranges.iter().map(|(b, e)| format!("{b}-{e}")).collect();
                format!("[{}]", parts.join(","))
            }
            AttributeValue::Set(items) => {
                let mut sorted = items.clone();
                sorted.sort();
                format!("{{{}}}", sorted.join(","))
            }
        }
    }
}

fn parse_ranges(text: &str) -> Option<Ranges> {
    let inner = text.strip_prefix('[')?.strip_suffix(']')?;
    let mut pairs = Vec::new();
    for part in inner.split(',') {
        let (begin, end) = part.split_once('-')?;
        pairs.push((begin.parse::<u64>().ok()?, end.parse::<u64>().ok()?));
    }
    Ranges::new(pairs).ok()
}

fn parse_set(text: &str) -> Option<Vec<String>> {
    let inner = text.strip_prefix('{')?.strip_suffix('}')?;
    if inner.contains(['{', '}']) {
        return None;
    }
    Some(inner.split(',').filter(|item| !item.is_empty()).map(str::to_owned).collect())
}

/// A finite decimal number (Rust also reads `inf`, `nan` and `infinity`; Mesos's attributes
/// treat those as text, and so does this).
fn parse_scalar(text: &str) -> Option<f64> {
    let numeric =
        !text.is_empty() && text.chars().all(|c| c.is_ascii_digit() || matches!(c, '.' | '-' | '+' | 'e' | 'E'));
    if !numeric {
        return None;
    }
    text.parse::<f64>().ok().filter(|v| v.is_finite())
}

/// Thousandths, half-to-even on the exact binary value, trailing zeros dropped: Java's
/// `DecimalFormat("0.###")`, which Marathon formats scalar attributes with. (Rust's `{:.3}`
/// rounds the exact binary value half-to-even too.)
pub fn format_scalar(value: f64) -> String {
    let fixed = format!("{value:.3}");
    let trimmed = fixed.trim_end_matches('0').trim_end_matches('.');
    trimmed.to_owned()
}

/// What constraints can see of an agent: its hostname, fault domain and attributes. Both the
/// candidate agent of an offer and the agents of placed instances are described this way.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentFacts {
    pub hostname: String,
    pub region: Option<String>,
    pub zone: Option<String>,
    pub attributes: BTreeMap<String, AttributeValue>,
}

impl AgentFacts {
    pub fn new(hostname: &str) -> AgentFacts {
        AgentFacts { hostname: hostname.to_owned(), ..AgentFacts::default() }
    }

    /// Attributes as agents report them (`name → Mesos text form`), each read with
    /// [`AttributeValue::parse`].
    pub fn from_attribute_texts(hostname: &str, attributes: &BTreeMap<String, String>) -> AgentFacts {
        let mut facts = AgentFacts::new(hostname);
        for (name, text) in attributes {
            facts.attributes.insert(name.clone(), AttributeValue::parse(text));
        }
        facts
    }

    /// Adds one attribute from its Mesos text form.
    pub fn with_attribute(mut self, name: &str, text: &str) -> AgentFacts {
        self.attributes.insert(name.to_owned(), AttributeValue::parse(text));
        self
    }

    pub fn with_domain(mut self, region: &str, zone: &str) -> AgentFacts {
        self.region = Some(region.to_owned());
        self.zone = Some(zone.to_owned());
        self
    }
}

/// What a constraint reads from an agent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Field {
    Hostname,
    Region,
    Zone,
    Attribute(String),
}

impl Field {
    /// `hostname`/`@hostname`, `@region`, `@zone`, or an attribute name.
    pub fn from_name(name: &str) -> Field {
        match name {
            "hostname" | HOSTNAME_FIELD => Field::Hostname,
            REGION_FIELD => Field::Region,
            ZONE_FIELD => Field::Zone,
            other => Field::Attribute(other.to_owned()),
        }
    }

    /// The agent's value for this field, in the text form constraints compare.
    pub fn read(&self, agent: &AgentFacts) -> Option<String> {
        match self {
            Field::Hostname => Some(agent.hostname.clone()),
            Field::Region => agent.region.clone(),
            Field::Zone => agent.zone.clone(),
            Field::Attribute(name) => agent.attributes.get(name).map(AttributeValue::constraint_text),
        }
    }

    /// Whether this field is part of the fault domain (`@region`, `@zone`).
    pub fn is_fault_domain(&self) -> bool {
        matches!(self, Field::Region | Field::Zone)
    }
}

/// A regex that must match a whole value (Marathon uses Java's `String.matches`).
#[derive(Clone, Debug)]
pub struct FullMatch {
    pattern: String,
    regex: Regex,
}

impl FullMatch {
    pub fn new(pattern: &str) -> Result<FullMatch, ConstraintError> {
        let anchored = format!("^(?:{pattern})$");
        let regex = RegexBuilder::new(&anchored)
            .size_limit(REGEX_SIZE_LIMIT)
            .nest_limit(REGEX_NEST_LIMIT)
            .build()
            .map_err(|e| ConstraintError::BadRegex { pattern: pattern.to_owned(), reason: e.to_string() })?;
        Ok(FullMatch { pattern: pattern.to_owned(), regex })
    }

    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    pub fn is_match(&self, value: &str) -> bool {
        self.regex.is_match(value)
    }
}

impl PartialEq for FullMatch {
    fn eq(&self, other: &FullMatch) -> bool {
        self.pattern == other.pattern
    }
}

/// An operator with its parsed value.
#[derive(Clone, Debug, PartialEq)]
pub enum Rule {
    Unique,
    /// `Some(value)`: exactly this value; `None`: whatever the first placed instance has.
    Cluster(Option<String>),
    /// `Some(n)` (n ≥ 1): spread over `n` values; `None`: the even spread over values seen.
    GroupBy(Option<u32>),
    Like(FullMatch),
    Unlike(FullMatch),
    /// At most this many instances per value (Marathon accepts any 32-bit integer).
    MaxPer(i32),
    /// The text the candidate's value must equal (a numeric value already rounded).
    Is(String),
}

/// One placement constraint, parsed.
#[derive(Clone, Debug, PartialEq)]
pub struct Constraint {
    field: Field,
    /// The field, operator and value as written, for rendering the app back.
    written: Vec<String>,
    rule: Rule,
}

/// Why a constraint was refused. The messages follow Marathon's validation messages.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConstraintError {
    #[error("Each constraint must have either 2 or 3 fields (got {0})")]
    Shape(usize),
    #[error("missing field for constraint declaration")]
    MissingField,
    #[error("operator must be one of the following UNIQUE, CLUSTER, GROUP_BY, LIKE, MAX_PER, UNLIKE or IS (got `{0}`)")]
    UnknownOperator(String),
    #[error("UNIQUE does not accept a value")]
    UniqueTakesNoValue,
    #[error("GROUP BY must define an integer value or else no value at all (got `{0}`)")]
    GroupByNotInteger(String),
    #[error("MAX_PER requires an integer value (got {0:?})")]
    MaxPerNotInteger(Option<String>),
    #[error("LIKE and UNLIKE require a non-empty, regular expression value")]
    MissingRegex,
    #[error("`{pattern}` is not a valid regular expression: {reason}")]
    BadRegex { pattern: String, reason: String },
    #[error("IS requires a value")]
    IsMissingValue,
    #[error(
        "IS only supports Mesos text and float values (see http://mesos.apache.org/documentation/latest/attributes-resources/) (got `{0}`)"
    )]
    IsNotText(String),
}

impl Constraint {
    /// Parses `[field, OPERATOR]` or `[field, OPERATOR, value]`; the operator is
    /// case-insensitive, as in Marathon.
    pub fn parse(parts: &[String]) -> Result<Constraint, ConstraintError> {
        let (field_name, operator, value) = match parts {
            [field, operator] => (field, operator, None),
            [field, operator, value] => (field, operator, Some(value.as_str())),
            other => return Err(ConstraintError::Shape(other.len())),
        };
        if field_name.is_empty() {
            return Err(ConstraintError::MissingField);
        }
        let rule = parse_rule(operator, value)?;
        Ok(Constraint { field: Field::from_name(field_name), written: parts.to_vec(), rule })
    }

    /// Parses every constraint of an app; the error names the first bad one by its index.
    pub fn parse_all(constraints: &[Vec<String>]) -> Result<Vec<Constraint>, (usize, ConstraintError)> {
        constraints.iter().enumerate().map(|(i, c)| Constraint::parse(c).map_err(|e| (i, e))).collect()
    }

    pub fn field(&self) -> &Field {
        &self.field
    }

    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    /// The constraint as written (`["hostname", "UNIQUE"]`).
    pub fn as_written(&self) -> &[String] {
        &self.written
    }

    /// Whether placing one more instance of the app on `candidate` keeps this constraint.
    ///
    /// `placed` holds the agent of every instance of the app that counts (one entry per
    /// instance, instances placed earlier in the same plan included); `target_instances` is
    /// the app's instance count, which `GROUP_BY n` divides among its groups.
    pub fn allows(&self, candidate: &AgentFacts, placed: &[AgentFacts], target_instances: u32) -> bool {
        let Some(value) = self.field.read(candidate) else {
            return matches!(self.rule, Rule::Unlike(_));
        };
        match &self.rule {
            Rule::Unique => self.count_with(placed, &value) == 0,
            Rule::Cluster(Some(expected)) => &value == expected,
            Rule::Cluster(None) => placed.first().is_none_or(|first| self.field.read(first).as_ref() == Some(&value)),
            Rule::GroupBy(Some(groups)) => self.group_by_allows(&value, placed, target_instances, *groups),
            Rule::GroupBy(None) => self.even_spread_allows(&value, placed),
            Rule::Like(regex) => regex.is_match(&value),
            Rule::Unlike(regex) => !regex.is_match(&value),
            Rule::MaxPer(max) => {
                let count = self.count_with(placed, &value);
                count == 0 || i64::from(count) < i64::from(*max)
            }
            Rule::Is(expected) => &value == expected,
        }
    }

    fn count_with(&self, placed: &[AgentFacts], value: &str) -> u32 {
        let count = placed.iter().filter(|agent| self.field.read(agent).as_deref() == Some(value)).count();
        u32::try_from(count).unwrap_or(u32::MAX)
    }

    /// Instances per value of the field; agents without the field count under `None`.
    fn group_counts(&self, placed: &[AgentFacts]) -> BTreeMap<Option<String>, u32> {
        let mut counts = BTreeMap::new();
        for agent in placed {
            let slot = counts.entry(self.field.read(agent)).or_insert(0u32);
            *slot = slot.saturating_add(1);
        }
        counts
    }

    /// Marathon 1.10's `GROUP_BY n`: each group may take `target / n`, and `target % n` of
    /// them one more; a new group opens while fewer than `n` are in use.
    fn group_by_allows(&self, value: &str, placed: &[AgentFacts], target: u32, groups: u32) -> bool {
        let counts = self.group_counts(placed);
        let groups = groups.max(1);
        let per_group = target / groups;
        let remainder = target % groups;
        let remainder_used: u64 = counts.values().map(|&c| u64::from(c.saturating_sub(per_group))).sum();
        let remainder_left = u64::from(remainder) > remainder_used;
        match counts.get(&Some(value.to_owned())) {
            Some(&count) => count < per_group || (count == per_group && remainder_left),
            None => counts.len() < groups as usize,
        }
    }

    /// `GROUP_BY` without a count: a value not yet used is welcome; a used one only while it
    /// holds no more instances than the least-used value.
    fn even_spread_allows(&self, value: &str, placed: &[AgentFacts]) -> bool {
        let counts = self.group_counts(placed);
        let least = counts.values().copied().min().unwrap_or(0);
        counts.get(&Some(value.to_owned())).is_none_or(|&count| count == least)
    }
}

impl fmt::Display for Constraint {
    /// The JSON form, `["hostname","UNIQUE"]`, for logs and messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, part) in self.written.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{part:?}")?;
        }
        f.write_str("]")
    }
}

fn parse_rule(operator: &str, value: Option<&str>) -> Result<Rule, ConstraintError> {
    match operator.to_ascii_uppercase().as_str() {
        "UNIQUE" => match value {
            None => Ok(Rule::Unique),
            Some(_) => Err(ConstraintError::UniqueTakesNoValue),
        },
        "CLUSTER" => Ok(Rule::Cluster(value.filter(|v| !v.is_empty()).map(str::to_owned))),
        "GROUP_BY" => parse_group_by(value),
        "LIKE" => Ok(Rule::Like(parse_regex(value)?)),
        "UNLIKE" => Ok(Rule::Unlike(parse_regex(value)?)),
        "MAX_PER" => value
            .and_then(|v| v.parse::<i32>().ok())
            .map(Rule::MaxPer)
            .ok_or_else(|| ConstraintError::MaxPerNotInteger(value.map(str::to_owned))),
        "IS" => parse_is(value),
        _ => Err(ConstraintError::UnknownOperator(operator.to_owned())),
    }
}

fn parse_group_by(value: Option<&str>) -> Result<Rule, ConstraintError> {
    let Some(text) = value else {
        return Ok(Rule::GroupBy(None));
    };
    let groups = text.parse::<i32>().map_err(|_| ConstraintError::GroupByNotInteger(text.to_owned()))?;
    Ok(Rule::GroupBy(u32::try_from(groups).ok().filter(|&n| n > 0)))
}

fn parse_regex(value: Option<&str>) -> Result<FullMatch, ConstraintError> {
    match value {
        Some(pattern) if !pattern.is_empty() => FullMatch::new(pattern),
        _ => Err(ConstraintError::MissingRegex),
    }
}

/// `IS` takes Mesos text (`[a-zA-Z0-9_/.-]`) or a number; a number (`[0-9]+(.[0-9]+)?`) is
/// compared rounded, as scalar attributes are formatted.
fn parse_is(value: Option<&str>) -> Result<Rule, ConstraintError> {
    let text = value.ok_or(ConstraintError::IsMissingValue)?;
    let is_mesos_text = text.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '/' | '.' | '-'));
    if !is_mesos_text {
        return Err(ConstraintError::IsNotText(text.to_owned()));
    }
    Ok(Rule::Is(if is_plain_decimal(text) {
        text.parse::<f64>().map(format_scalar).unwrap_or_else(|_| text.to_owned())
    } else {
        text.to_owned()
    }))
}

/// `[0-9]+(\.[0-9]+)?`, the numbers `IS` rounds.
fn is_plain_decimal(text: &str) -> bool {
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (text, None),
    };
    let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit());
    digits(whole) && fraction.is_none_or(digits)
}
