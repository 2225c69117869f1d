//! `migrate`: copies every live session from one store to another, resumably.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use session_stores::connect::redact;
use session_stores::migrate::{CopyOptions, copy_sessions};
use session_stores::{Error, ScanCursor};

use crate::output::{Failure, each_page, failure, open};

/// The default state file of a migration: named after both URLs, so that a second run of the
/// same migration resumes it.
fn default_state(from: &str, to: &str) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (from, to).hash(&mut hasher);
    PathBuf::from(format!(
        ".session-stores-migrate-{:016x}.state",
        hasher.finish()
    ))
}

pub(crate) async fn run(
    from: &str,
    to: &str,
    state: Option<PathBuf>,
    page: usize,
) -> Result<(), Failure> {
    let state = state.unwrap_or_else(|| default_state(from, to));
    let resume = match std::fs::read_to_string(&state) {
        Ok(text) if text.trim() == "done" => {
            println!(
                "{} says this migration is done; delete it to run it again",
                state.display()
            );
            return Ok(());
        }
        Ok(text) if !text.trim().is_empty() => Some(ScanCursor::new(text.trim())),
        Ok(_) => None,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
        Err(err) => return Err(failure(format!("reading {}: {err}", state.display()))),
    };
    let (source, target) = (open(from).await?, open(to).await?);
    let total = source.len().await?;
    println!(
        "migrating {total} live sessions from {} to {}{}",
        redact(from),
        redact(to),
        if resume.is_some() {
            format!(" (resuming from {})", state.display())
        } else {
            String::new()
        }
    );
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} sessions  {per_sec}  eta {eta}  {msg}")
            .map_err(|err| failure(err.to_string()))?,
    );
    let started = Instant::now();
    let options = CopyOptions::default().page(page).resume(resume);
    let save_to = state.clone();
    let progress = copy_sessions(Arc::clone(&source), Arc::clone(&target), options, |p| {
        bar.set_position(p.read);
        bar.set_message(format!("copied {} present {}", p.copied, p.present));
        // After each page, atomically: the next page's cursor, or `done`.
        let text = p.cursor.as_ref().map_or("done", |c| c.as_str());
        let tmp = save_to.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|()| std::fs::rename(&tmp, &save_to))
            .map_err(|err| Error::config(format!("writing {}: {err}", save_to.display())))
    })
    .await?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    println!(
        "read {} sessions in {secs:.1} s ({:.0}/s): {} copied, {} already there, {} expired on the way",
        progress.read,
        progress.read as f64 / secs,
        progress.copied,
        progress.present,
        progress.expired
    );
    // Verify: every live source session is at the destination.
    let mut missing = 0u64;
    each_page(&*source, async |sessions| {
        for (id, _) in &sessions {
            if target.get(id).await?.is_none() {
                missing += 1;
            }
        }
        Ok(())
    })
    .await?;
    let (source_len, target_len) = (source.len().await?, target.len().await?);
    println!(
        "verified: source {source_len} live, destination {target_len} live, {missing} missing"
    );
    if missing > 0 {
        return Err(failure(format!(
            "{missing} live sessions of the source are not at the destination (written to the \
             source during the copy? run it again after deleting {})",
            state.display()
        )));
    }
    Ok(())
}
