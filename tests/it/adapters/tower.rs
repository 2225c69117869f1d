//! The scenarios under tower-sessions (0.15, and 0.14 with feature `tower-sessions-014`) and
//! axum, through `tower::ServiceExt::oneshot`: one app, built against each version's
//! middleware, over one adapter type.

#[cfg(feature = "tower-sessions")]
mod v015 {
    use session_stores::adapters::tower_sessions::session_id_of;
    use tower_sessions as ts;
    include!("tower_app.rs");
}

#[cfg(feature = "tower-sessions-014")]
pub mod v014 {
    use session_stores::adapters::tower_sessions::v014::session_id_of;
    use tower_sessions_014 as ts;
    include!("tower_app.rs");
}
