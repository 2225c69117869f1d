//! Stores over stores. Each wrapper adds one idea to any [`SessionStore`](crate::SessionStore)
//! (a built-in backend or one of yours), passes the same conformance suite as the store it
//! wraps, forwards the capabilities it does not change, and stacks with the others.
//!
//! | wrapper | idea | feature |
//! |---|---|---|
//! | [`deadline::WithDeadline`] | a deadline on every operation | |
//! | [`hashed_ids::HashedIds`] | the backend sees only a keyed hash of each session id | `hashed-ids` |
//! | [`encrypted::Encrypted`] | the backend sees only sealed session data, under a rotating key ring | `encryption` |
//! | [`migrating::Migrating`] | sessions move from an old store to a new one as they are used | |
//! | [`events::Events`] | created, rotated and ended sessions reported to a bounded queue | |

pub mod deadline;
pub mod events;
pub mod migrating;

#[cfg(feature = "encryption")]
#[cfg_attr(docsrs, doc(cfg(feature = "encryption")))]
pub mod encrypted;

#[cfg(feature = "hashed-ids")]
#[cfg_attr(docsrs, doc(cfg(feature = "hashed-ids")))]
pub mod hashed_ids;

#[cfg(any(feature = "hashed-ids", feature = "encryption"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "hashed-ids", feature = "encryption"))))]
pub mod key;

#[cfg(any(feature = "hashed-ids", feature = "encryption"))]
mod owners;
