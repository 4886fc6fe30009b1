//! The transport's pure cores: no I/O, no clock reads, no randomness of their own.
//!
//! - [`wire`]: frames and envelopes, encoded and decoded without panics.
//! - [`identity`]: who a peer is and whether an endpoint admits it.
//! - [`session`]: which connection carries a node pair's session.
//! - [`detector`]: when a silent peer is declared lost.
//! - [`fault`]: the fault vocabulary shared by SimNet, the chaos actor and the simulator,
//!   and the link model that applies it.
//! - [`link_stage`]: one directed link's frames under link faults, for the QUIC transport.

pub mod detector;
pub mod fault;
pub mod identity;
pub mod link_stage;
pub mod session;
pub mod wire;
