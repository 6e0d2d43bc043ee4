//! Config as the data plane holds it: the compiled snapshot ([`snapshot`]), how a config
//! becomes one ([`compile`]), and each listener's live slot ([`slot`]), through which a
//! connection reads the snapshot in force when each of its requests starts. TLS
//! contexts and the mesh identity are compiled in [`tls`].

pub mod compile;
mod resumption;
pub mod slot;
pub mod snapshot;
pub(crate) mod tls;
