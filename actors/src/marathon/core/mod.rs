//! Marathon's app model, pure: path ids ([`path`]), timestamps ([`timestamp`]), the app
//! definition with its defaults, deprecated aliases, partial updates, read model and task
//! environment ([`app`]), its JSON reader with Marathon's error shapes ([`app_json`]), and its
//! semantic validation ([`validation`]).

pub mod app;
pub mod app_json;
pub mod path;
pub mod timestamp;
pub mod validation;

#[cfg(test)]
mod app_tests;
