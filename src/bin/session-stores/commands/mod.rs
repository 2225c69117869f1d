//! One file per command.

pub(crate) mod check;
pub(crate) mod list;
pub(crate) mod migrate;
pub(crate) mod purge;
pub(crate) mod show;
pub(crate) mod stats;
