//! `migrate`: copies every live session from one store to another, resumably.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use session_stores::connect::redact;
use session_stores::migrate::{CopyOptions, copy_sessions};
use session_stores::{Error, ScanCursor, admin};

use crate::output::{Failure, each_page, failure};

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
    // Both as the app reaches them, less a HashedIds layer both share: the sessions are
    // copied under their stored ids, never hashed twice.
    let (source, target) = admin::copy_stores(from, to).await.map_err(|err| {
        failure(format!(
            "{} to {}: {}",
            redact(from),
            redact(to),
            Failure::from(err).message
        ))
    })?;
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
        save_state(&save_to, text)
            .map_err(|err| Error::config(format!("writing {}: {err}", save_to.display())))
    })
    .await?;
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-3);
    println!(
        "read {} sessions in {secs:.1} s ({:.0}/s): {} copied, {} already there, {} expired on the \
         way, {} logged out during the copy (not copied), {} refused",
        progress.read,
        progress.read as f64 / secs,
        progress.copied,
        progress.present,
        progress.expired,
        progress.vanished,
        progress.failures.len()
    );
    for refused in &progress.failures {
        println!(
            "refused by the destination: session {}: {}",
            refused.id, refused.reason
        );
    }
    // Verify: every live source session is at the destination.
    // Read by id through the destination's wrappers, as the app reads it.
    let refused: std::collections::HashSet<String> =
        progress.failures.iter().map(|f| f.id.to_string()).collect();
    let mut missing = 0u64;
    each_page(&*source, async |sessions| {
        for (id, _) in &sessions {
            if target.get(id).await?.is_none() && !refused.contains(&id.hint().to_string()) {
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
    if !progress.failures.is_empty() {
        return Err(failure(format!(
            "{} sessions were refused by the destination (listed above); the others are copied",
            progress.failures.len()
        )));
    }
    Ok(())
}

/// Writes the state file atomically (a temporary file renamed over it), readable by its
/// owner only: its scan position can name a session.
fn save_state(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options.open(&tmp)?;
    #[cfg(unix)]
    {
        // A file left by an older run keeps its mode through `open`: set it.
        use std::os::unix::fs::PermissionsExt as _;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)
}
