//! Marathon's pure cores: deployment plans, locks and progress (`deployment`) and the
//! instance-level decisions of rolling upgrades and scaling (`upgrade`).

pub mod deployment;
pub mod upgrade;

#[cfg(test)]
mod deployment_tests;
