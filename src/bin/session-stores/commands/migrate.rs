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
    let saved = match std::fs::read_to_string(&state) {
        Ok(text) if text.trim() == "done" => {
            println!(
                "{} says this migration is done; delete it to run it again",
                state.display()
            );
            return Ok(());
        }
        Ok(text) if !text.trim().is_empty() => Some(text.trim().to_string()),
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
    let resume = match saved {
        Some(saved) => find_position(&*source, &saved, page).await?,
        None => None,
    };
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
        let text = p
            .cursor
            .as_ref()
            .map_or_else(|| "done".to_string(), |c| position(c, page));
        save_state(&save_to, &text)
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
    for bad in &progress.undecodable {
        println!(
            "not copied, the source cannot decode it: session {}: {}",
            bad.id, bad.reason
        );
    }
    // Verify: every live source session is at the destination.
    // Read by id through the destination's wrappers, as the app reads it.
    let refused: std::collections::HashSet<String> =
        progress.failures.iter().map(|f| f.id.to_string()).collect();
    let mut missing = 0u64;
    each_page(&*source, async |sessions| {
        // VERIFY_READS reads in flight at once, as the copy writes.
        let mut reads: tokio::task::JoinSet<session_stores::Result<bool>> =
            tokio::task::JoinSet::new();
        for (id, _) in sessions {
            if reads.len() >= VERIFY_READS
                && let Some(found) = reads.join_next().await
            {
                missing += u64::from(!found.map_err(|err| failure(err.to_string()))??);
            }
            if refused.contains(&id.hint().to_string()) {
                continue;
            }
            let target = Arc::clone(&target);
            reads.spawn(async move { target.get(&id).await.map(|found| found.is_some()) });
        }
        while let Some(found) = reads.join_next().await {
            missing += u64::from(!found.map_err(|err| failure(err.to_string()))??);
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
    if !progress.undecodable.is_empty() {
        return Err(failure(format!(
            "{} entries of the source cannot be decoded (listed above); the others are copied",
            progress.undecodable.len()
        )));
    }
    Ok(())
}

/// Reads in flight at once when the destination is verified.
const VERIFY_READS: usize = 32;

/// What the state file holds between pages: the page size and a digest of the next page's
/// cursor, never the cursor itself (a keyset cursor names a live session id, a bearer
/// credential). `v1` names the format.
fn position(cursor: &ScanCursor, page: usize) -> String {
    format!("v1 page={page} cursor-sha256={}", digest(cursor))
}

fn digest(cursor: &ScanCursor) -> String {
    use sha2::{Digest as _, Sha256};
    Sha256::digest(cursor.as_str().as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The cursor a saved position stands for: the source is read again from the start, page
/// by page with the saved page size (reads only, no writes), until a page's next cursor has
/// the saved digest. If none has (the sessions around the position are gone), the copy
/// starts over, which repeats nothing but reads: every write is a `create`.
async fn find_position(
    source: &dyn session_stores::SessionStore,
    saved: &str,
    page: usize,
) -> Result<Option<ScanCursor>, Failure> {
    let mut parts = saved.split(' ');
    let (Some("v1"), Some(size), Some(wanted), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(failure(
            "the state file is not one this version wrote: delete it to start over",
        ));
    };
    let size = size
        .strip_prefix("page=")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(page);
    let wanted = wanted.strip_prefix("cursor-sha256=").unwrap_or(wanted);
    let mut cursor: Option<ScanCursor> = None;
    loop {
        let scanned = source.scan(cursor.as_ref(), size).await?;
        let Some(next) = scanned.next else {
            println!("the saved position is gone from the source; copying from the start");
            return Ok(None);
        };
        if digest(&next) == wanted {
            return Ok(Some(next));
        }
        cursor = Some(next);
    }
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
