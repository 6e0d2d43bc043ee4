//! Config as the data plane holds it: the compiled snapshot ([`snapshot`]), how a config
//! becomes one ([`compile`]), and each listener's live slot ([`slot`]), through which a
//! connection reads the snapshot in force when each of its requests starts.

pub mod compile;
pub mod slot;
pub mod snapshot;
