//! The agent: offers its node's resources to the leading master and runs tasks through a
//! [`driver::TaskDriver`].

pub mod driver;
