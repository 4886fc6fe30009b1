//! The service scheduler in Marathon's image: long-running apps kept at their instance counts,
//! changed through deployments. Pure decisions live in `marathon/core`.

pub mod core;
