//! `session-stores`: look at, clean and move the sessions of any store `connect(url)` opens.
//!
//! ```text
//! session-stores stats URL
//! session-stores list URL [--owner O] [--limit N]
//! session-stores show URL ID [--data]
//! session-stores purge URL
//! session-stores migrate FROM TO [--state FILE] [--page N]
//! session-stores check URL
//! ```
//!
//! Errors are one line with their causes, and the exit code is 1 (`check` exits with 2 when
//! it finds a problem). URLs are printed with their passwords redacted. The command holds
//! no driver of its own: it uses the library's `connect`, `migrate` and `admin` APIs only.

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod commands;
mod output;

use cli::{Cli, Command};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Stats { url } => commands::stats::run(&url).await,
        Command::List {
            url,
            owner,
            limit,
            full_ids,
        } => commands::list::run(&url, owner, limit, full_ids).await,
        Command::Show { url, id, data } => commands::show::run(&url, &id, data).await,
        Command::Purge { url } => commands::purge::run(&url).await,
        Command::Migrate {
            from,
            to,
            state,
            page,
        } => commands::migrate::run(&from, &to, state, page).await,
        Command::Check { url } => commands::check::run(&url).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}
