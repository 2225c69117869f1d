//! The command line, with clap.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Look at, clean and move the sessions of a session store.
#[derive(Parser)]
#[command(name = "session-stores", version)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Live sessions, owners and the size of the session data.
    Stats {
        /// The store, as `connect` takes it (memory://, file://, sqlite:, postgres://, redis://...).
        url: String,
    },
    /// Lists sessions: ids, expiry, version and owner.
    List {
        url: String,
        /// Only this owner's sessions.
        #[arg(long)]
        owner: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print whole session ids (bearer credentials: anyone holding one is logged in);
        /// by default they are shortened.
        #[arg(long)]
        full_ids: bool,
    },
    /// One session; its data only with --data.
    Show {
        url: String,
        id: String,
        /// Print the session's data too.
        #[arg(long)]
        data: bool,
    },
    /// Deletes the expired sessions (`delete_expired`) and says how many.
    Purge { url: String },
    /// Copies every live session from FROM to TO, never overwriting a session already at TO.
    Migrate {
        from: String,
        to: String,
        /// Where the position is kept after each page, to resume an interrupted run (default:
        /// a file named after the two URLs in the current directory).
        #[arg(long)]
        state: Option<PathBuf>,
        /// Sessions read per page.
        #[arg(long, default_value_t = 1000)]
        page: usize,
    },
    /// Runs the conformance suite in a scratch namespace of the deployment and inspects
    /// settings that lose sessions.
    Check { url: String },
}
