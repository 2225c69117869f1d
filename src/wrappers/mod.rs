//! Stores over stores. Each wrapper adds one idea to any [`SessionStore`](crate::SessionStore)
//! (a built-in backend or one of yours), passes the same conformance suite as the store it
//! wraps, forwards the capabilities it does not change, and stacks with the others.

pub mod deadline;
