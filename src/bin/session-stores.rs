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
//! it finds a problem). URLs are printed with their passwords redacted.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
#[cfg(any(feature = "sqlite", feature = "redis", feature = "postgres"))]
use std::time::Duration;
use std::time::Instant;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use session_stores::connect::redact;
use session_stores::migrate::{CopyOptions, copy_sessions};
use session_stores::{
    Error, Owner, ScanCursor, Session, SessionId, SessionStore, StoreKind, connect, now_millis,
};

/// Look at, clean and move the sessions of a session store.
#[derive(Parser)]
#[command(name = "session-stores", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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

/// A failure: printed as one line, with the exit code.
struct Failure {
    message: String,
    code: u8,
}

impl<E: std::error::Error> From<E> for Failure {
    fn from(err: E) -> Self {
        let mut message = err.to_string();
        let mut source = err.source();
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Failure { message, code: 1 }
    }
}

fn failure(message: impl Into<String>) -> Failure {
    Failure {
        message: message.into(),
        code: 1,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Stats { url } => stats(&url).await,
        Command::List { url, owner, limit } => list(&url, owner, limit).await,
        Command::Show { url, id, data } => show(&url, &id, data).await,
        Command::Purge { url } => purge(&url).await,
        Command::Migrate {
            from,
            to,
            state,
            page,
        } => migrate(&from, &to, state, page).await,
        Command::Check { url } => check(&url).await,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

async fn open(url: &str) -> Result<Arc<dyn SessionStore>, Failure> {
    let store = connect(url)
        .await
        .map_err(|err| failure(format!("{}: {}", redact(url), Failure::from(err).message)))?;
    Ok(Arc::from(store))
}

fn when(millis: i64) -> String {
    let left = millis - now_millis();
    if left <= 0 {
        return "expired".to_string();
    }
    let secs = left / 1000;
    format!("in {}h{:02}m{:02}s", secs / 3600, secs / 60 % 60, secs % 60)
}

async fn stats(url: &str) -> Result<(), Failure> {
    let store = open(url).await?;
    let live = store.len().await?;
    println!("store:          {} ({})", redact(url), StoreKind::of(url)?);
    println!("live sessions:  {live}");
    if !store.capabilities().scan {
        println!("(this store cannot be scanned: no size distribution)");
        return Ok(());
    }
    let (mut sizes, mut owned, mut owners) = (Vec::new(), 0u64, std::collections::HashSet::new());
    each_page(&*store, async |sessions| {
        for (_, session) in &sessions {
            sizes.push(serde_json::to_vec(session.data()).map_or(0, |b| b.len()));
            if let Some(owner) = session.owner() {
                owned += 1;
                owners.insert(owner.clone());
            }
        }
        Ok(())
    })
    .await?;
    sizes.sort_unstable();
    println!("scanned:        {} sessions", sizes.len());
    println!(
        "owned:          {owned} sessions of {} owners",
        owners.len()
    );
    if !sizes.is_empty() {
        let at = |q: f64| sizes[((sizes.len() - 1) as f64 * q) as usize];
        println!(
            "data bytes:     min {}  p50 {}  p90 {}  p99 {}  max {}",
            sizes[0],
            at(0.5),
            at(0.9),
            at(0.99),
            sizes[sizes.len() - 1]
        );
    }
    if store.capabilities().expires_by_itself {
        println!("expired:        0 (the backend removes expired sessions by itself)");
    } else {
        match expired_count(url, StoreKind::of(url)?, live).await {
            Ok(Some(expired)) => {
                println!("expired:        {expired} not deleted yet (`purge` deletes them)")
            }
            Ok(None) => {
                println!("expired:        not counted here; `purge` deletes them and says how many")
            }
            Err(err) => println!("expired:        could not be counted: {}", err.message),
        }
    }
    Ok(())
}

/// The URL for the driver itself: this crate's own options taken out of the query.
#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn driver_url(url: &str) -> String {
    const OURS: &[&str] = &[
        "table",
        "schema",
        "migrate",
        "capacity",
        "key_prefix",
        "hash_ids_key_env",
        "encryption_keys_env",
    ];
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let kept: Vec<&str> = query
        .split('&')
        .filter(|p| !p.is_empty() && !OURS.contains(&p.split('=').next().unwrap_or("")))
        .collect();
    if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    }
}

/// How long a query the command makes on Postgres itself (not through the store, which has
/// its own operation timeout) may take, connecting included.
#[cfg(feature = "postgres")]
const DIRECT_QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs `query` on a one-connection pool of its own at `url`, connecting included, within
/// `limit`: a server that accepts connections and never answers is a failure, not a hang.
#[cfg(feature = "postgres")]
async fn postgres_query<T, F, Fut>(
    url: &str,
    limit: Duration,
    what: &str,
    query: F,
) -> Result<T, Failure>
where
    F: FnOnce(sqlx::PgPool) -> Fut,
    Fut: std::future::Future<Output = Result<T, sqlx::Error>>,
{
    let work = async {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(limit)
            .connect(&driver_url(url))
            .await?;
        let answer = query(pool.clone()).await;
        pool.close().await;
        answer
    };
    match tokio::time::timeout(limit, work).await {
        Ok(answer) => answer.map_err(|err| {
            let mut failure = Failure::from(err);
            failure.message = format!("{what} at {}: {}", redact(url), failure.message);
            failure
        }),
        Err(_) => Err(failure(format!(
            "{what} at {}: no answer within {limit:?}",
            redact(url)
        ))),
    }
}

/// How many expired sessions the backend still holds, where it can tell.
async fn expired_count(url: &str, kind: StoreKind, live: u64) -> Result<Option<u64>, Failure> {
    match kind {
        #[cfg(feature = "postgres")]
        StoreKind::Postgres => {
            let table = option_of(url, "table").unwrap_or("sessions");
            let schema = option_of(url, "schema").unwrap_or("public");
            let sql =
                format!("SELECT count(*) FROM \"{schema}\".\"{table}\" WHERE expires_at <= now()");
            let count: i64 = postgres_query(
                url,
                DIRECT_QUERY_TIMEOUT,
                "counting expired sessions",
                |pool| async move {
                    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
                        .fetch_one(&pool)
                        .await
                },
            )
            .await?;
            Ok(Some(count.max(0) as u64))
        }
        #[cfg(feature = "sqlite")]
        StoreKind::Sqlite => {
            let table = option_of(url, "table").unwrap_or("sessions");
            let Some(path) = sqlite_path(url) else {
                return Ok(None);
            };
            let conn = rusqlite::Connection::open_with_flags(
                path,
                rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
            )?;
            conn.busy_timeout(Duration::from_secs(10))?;
            let count: i64 = conn.query_row(
                &format!("SELECT count(*) FROM \"{table}\" WHERE expires_at <= ?1"),
                [now_millis()],
                |row| row.get(0),
            )?;
            Ok(Some(count.max(0) as u64))
        }
        StoreKind::File => {
            // Every `<id>.json` is a session; those `len` does not count have expired.
            let (base, _) = url.split_once('?').unwrap_or((url, ""));
            let dir = base.trim_start_matches("file://");
            let mut files = 0u64;
            for entry in std::fs::read_dir(dir)? {
                let name = entry?.file_name();
                let name = name.to_string_lossy();
                if let Some(id) = name.strip_suffix(".json")
                    && SessionId::check(id).is_ok()
                {
                    files += 1;
                }
            }
            Ok(Some(files.saturating_sub(live)))
        }
        _ => Ok(None),
    }
}

/// Scans the whole store in pages of 1,000, handing each page to `on_page`.
async fn each_page(
    store: &dyn SessionStore,
    mut on_page: impl AsyncFnMut(Vec<(SessionId, Session)>) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let mut cursor: Option<ScanCursor> = None;
    loop {
        let page = store.scan(cursor.as_ref(), 1000).await?;
        on_page(page.sessions).await?;
        match page.next {
            Some(next) => cursor = Some(next),
            None => return Ok(()),
        }
    }
}

async fn list(url: &str, owner: Option<String>, limit: usize) -> Result<(), Failure> {
    let store = open(url).await?;
    println!("{:<40} {:>18} {:>16}  owner", "id", "version", "expires");
    if let Some(owner) = owner {
        let owner = Owner::new(owner)?;
        for entry in store
            .sessions_of(&owner, false)
            .await?
            .into_iter()
            .take(limit)
        {
            println!(
                "{:<40} {:>18} {:>16}  {owner}",
                entry.id.as_str(),
                entry.version,
                when(entry.expires_at_millis)
            );
        }
        return Ok(());
    }
    let mut shown = 0;
    let mut cursor: Option<ScanCursor> = None;
    while shown < limit {
        let page = store
            .scan(cursor.as_ref(), (limit - shown).min(1000))
            .await?;
        for (id, session) in page.sessions.into_iter().take(limit - shown) {
            println!(
                "{:<40} {:>18} {:>16}  {}",
                id.as_str(),
                session.version(),
                when(session.expires_at_millis()),
                session.owner().map_or("-", |o| o.as_str())
            );
            shown += 1;
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(())
}

async fn show(url: &str, id: &str, data: bool) -> Result<(), Failure> {
    let store = open(url).await?;
    let id = SessionId::new(id)?;
    let Some(session) = store.get(&id).await? else {
        return Err(failure(format!("no live session {}", id.hint())));
    };
    println!("id:       {}", id.as_str());
    println!("version:  {}", session.version());
    println!(
        "expires:  {} ({} ms since the epoch)",
        when(session.expires_at_millis()),
        session.expires_at_millis()
    );
    println!("owner:    {}", session.owner().map_or("-", |o| o.as_str()));
    println!("keys:     {}", session.data().len());
    if data {
        println!("{}", serde_json::to_string_pretty(session.data())?);
    }
    Ok(())
}

async fn purge(url: &str) -> Result<(), Failure> {
    let store = open(url).await?;
    let removed = store.delete_expired().await?;
    if store.capabilities().expires_by_itself {
        println!("purged 0 expired sessions (the backend removes them by itself)");
    } else {
        println!("purged {removed} expired sessions");
    }
    Ok(())
}

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

async fn migrate(from: &str, to: &str, state: Option<PathBuf>, page: usize) -> Result<(), Failure> {
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

/// What `check` found wrong, with what to change.
struct Problem(String);

async fn check(url: &str) -> Result<(), Failure> {
    let kind = StoreKind::of(url)?;
    // The store as deployed must open; the suite then runs in scratch namespaces beside it.
    let deployed = open(url).await?;
    println!("checking {} ({kind})", redact(url));
    let scratch = Scratch::new(url, kind);
    let factory_scratch = Arc::clone(&scratch);
    let started = Instant::now();
    let result = session_stores::conformance::run(move || {
        let scratch = Arc::clone(&factory_scratch);
        async move { scratch.store().await }
    })
    .await;
    let cleanup = scratch.remove().await;
    let mut problems = Vec::new();
    match result {
        Ok(()) => println!(
            "conformance: all {} checks passed in a scratch namespace ({:.0} s)",
            session_stores::conformance::check_names().count(),
            started.elapsed().as_secs_f64()
        ),
        Err(failures) => {
            problems.push(Problem(format!("the conformance suite failed: {failures}")))
        }
    }
    if let Err(err) = cleanup {
        problems.push(Problem(format!(
            "the scratch namespace was not removed: {}",
            err.message
        )));
    }
    problems.extend(inspect(url, kind, &*deployed).await);
    if problems.is_empty() {
        println!("settings: nothing found that loses sessions");
        return Ok(());
    }
    for Problem(problem) in &problems {
        println!("PROBLEM: {problem}");
    }
    Err(Failure {
        message: format!("{} problem(s) found", problems.len()),
        code: 2,
    })
}

/// The scratch namespaces of a `check`: one fresh store per call, all removed at the end.
struct Scratch {
    url: String,
    kind: StoreKind,
    tag: String,
    made: Mutex<Vec<String>>,
}

impl Scratch {
    fn new(url: &str, kind: StoreKind) -> Arc<Scratch> {
        let tag = SessionId::generate().as_str()[..10]
            .to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "x");
        Arc::new(Scratch {
            url: url.to_string(),
            kind,
            tag,
            made: Mutex::new(Vec::new()),
        })
    }

    /// A fresh store in its own namespace of the deployment.
    async fn store(&self) -> Box<dyn SessionStore> {
        let n = {
            let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
            made.push(String::new());
            made.len()
        };
        let name = format!("sst_check_{}_{n}", self.tag);
        let url = match self.kind {
            StoreKind::Memory => self.url.clone(),
            StoreKind::File => {
                let (base, _) = self.url.split_once('?').unwrap_or((&self.url, ""));
                format!("{}/.{name}", base.trim_end_matches('/'))
            }
            StoreKind::Sqlite | StoreKind::Postgres => with_option(&self.url, "table", &name),
            StoreKind::Redis | StoreKind::RedisCluster => {
                with_option(&self.url, "key_prefix", &format!("{name}:"))
            }
            _ => panic!(
                "check does not know how to make a scratch namespace for {}",
                self.kind
            ),
        };
        self.made.lock().unwrap_or_else(|p| p.into_inner())[n - 1] = url.clone();
        match connect(&url).await {
            Ok(store) => store,
            // The suite reports a failing factory as the check's failure.
            Err(err) => panic!("opening a scratch store at {}: {err}", redact(&url)),
        }
    }

    /// Removes every scratch namespace: its sessions, and its table or directory.
    async fn remove(&self) -> Result<(), Failure> {
        let made: Vec<String> = self.made.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for url in made.iter().filter(|u| !u.is_empty()) {
            let store = connect(url).await?;
            store.clear().await?;
            drop(store);
            match self.kind {
                StoreKind::File => {
                    let dir = url.trim_start_matches("file://");
                    std::fs::remove_dir_all(dir).or_else(|err| match err.kind() {
                        std::io::ErrorKind::NotFound => Ok(()),
                        _ => Err(err),
                    })?;
                }
                StoreKind::Postgres => drop_postgres_table(url).await?,
                StoreKind::Sqlite => drop_sqlite_table(url)?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// `url` with the query option `key` set to `value` (replacing it if present).
fn with_option(url: &str, key: &str, value: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty() && p.split('=').next() != Some(key))
        .map(str::to_string)
        .collect();
    pairs.push(format!("{key}={value}"));
    format!("{base}?{}", pairs.join("&"))
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
fn option_of<'a>(url: &'a str, key: &str) -> Option<&'a str> {
    let (_, query) = url.split_once('?')?;
    query
        .split('&')
        .find_map(|p| p.strip_prefix(key)?.strip_prefix('='))
}

#[cfg(feature = "postgres")]
async fn drop_postgres_table(url: &str) -> Result<(), Failure> {
    let table = option_of(url, "table").unwrap_or("sessions");
    let schema = option_of(url, "schema").unwrap_or("public");
    let sql = format!("DROP TABLE IF EXISTS \"{schema}\".\"{table}\"");
    postgres_query(
        url,
        DIRECT_QUERY_TIMEOUT,
        "dropping a scratch table",
        |pool| async move { sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await },
    )
    .await?;
    Ok(())
}

#[cfg(not(feature = "postgres"))]
async fn drop_postgres_table(_: &str) -> Result<(), Failure> {
    Ok(())
}

/// The database file of a `sqlite:` URL; `None` for an in-memory database.
#[cfg(feature = "sqlite")]
fn sqlite_path(url: &str) -> Option<&str> {
    let (base, _) = url.split_once('?').unwrap_or((url, ""));
    let path = base
        .strip_prefix("sqlite://")
        .or_else(|| base.strip_prefix("sqlite:"))
        .unwrap_or(base);
    (!path.contains(":memory:")).then_some(path)
}

#[cfg(feature = "sqlite")]
fn drop_sqlite_table(url: &str) -> Result<(), Failure> {
    let table = option_of(url, "table").unwrap_or("sessions");
    let Some(path) = sqlite_path(url) else {
        return Ok(());
    };
    let conn = rusqlite::Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.execute_batch(&format!(
        "DROP TABLE IF EXISTS \"{table}\"; \
         DELETE FROM session_stores_schema WHERE table_name = '{table}';"
    ))?;
    Ok(())
}

#[cfg(not(feature = "sqlite"))]
fn drop_sqlite_table(_: &str) -> Result<(), Failure> {
    Ok(())
}

/// Settings of the deployment that silently lose sessions.
async fn inspect(url: &str, kind: StoreKind, store: &dyn SessionStore) -> Vec<Problem> {
    let mut problems = Vec::new();
    match kind {
        StoreKind::Memory => problems.push(Problem(
            "memory:// keeps sessions in this process only: a restart logs everyone out, and \
             other processes do not see them. Use file://, sqlite:, postgres:// or redis:// \
             for a deployment."
                .into(),
        )),
        StoreKind::Redis | StoreKind::RedisCluster => inspect_redis(url, &mut problems).await,
        StoreKind::Postgres => inspect_postgres(url, &mut problems).await,
        StoreKind::File | StoreKind::Sqlite if !store.capabilities().expires_by_itself => {
            println!(
                "note: expired sessions stay on disk until `purge` (or spawn_cleanup) runs: \
                 schedule `session-stores purge {}`",
                redact(url)
            );
        }
        _ => {}
    }
    problems
}

#[cfg(feature = "redis")]
async fn inspect_redis(url: &str, problems: &mut Vec<Problem>) {
    // One node tells the policy of a deployment configured as a whole.
    let first = match url.split_once("://") {
        Some((scheme, rest)) if scheme.ends_with("+cluster") => {
            let (hosts, _) = rest.split_once('?').unwrap_or((rest, ""));
            let (auth, hosts) = hosts.rsplit_once('@').map_or(("", hosts), |(a, h)| (a, h));
            let host = hosts
                .split(',')
                .next()
                .unwrap_or(hosts)
                .trim_end_matches('/');
            let tls = scheme.starts_with("rediss");
            let at = if auth.is_empty() {
                String::new()
            } else {
                format!("{auth}@")
            };
            format!("{}://{at}{host}", if tls { "rediss" } else { "redis" })
        }
        _ => url
            .split_once('?')
            .map_or(url, |(base, _)| base)
            .to_string(),
    };
    let config = async {
        let client = redis::Client::open(first.as_str())?;
        let mut conn = client.get_multiplexed_async_connection().await?;
        let policy: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("maxmemory-policy")
            .query_async(&mut conn)
            .await?;
        let save: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("save")
            .query_async(&mut conn)
            .await?;
        let aof: Vec<String> = redis::cmd("CONFIG")
            .arg("GET")
            .arg("appendonly")
            .query_async(&mut conn)
            .await?;
        Ok::<_, redis::RedisError>((policy, save, aof))
    };
    match tokio::time::timeout(Duration::from_secs(10), config).await {
        Ok(Ok((policy, save, aof))) => {
            let policy = policy.get(1).cloned().unwrap_or_default();
            // Every session has an expiry, so the volatile-* policies evict sessions too:
            // only noeviction keeps them.
            if policy != "noeviction" {
                problems.push(Problem(format!(
                    "Redis maxmemory-policy is {policy}: when Redis reaches maxmemory it evicts \
                     keys, live sessions included (every session has an expiry, so volatile-* \
                     policies evict them too), and users are logged out at random. Set \
                     `maxmemory-policy noeviction` (writes then fail loudly instead) and give \
                     Redis memory to spare"
                )));
            }
            let save = save.get(1).map_or("", |s| s.trim());
            let aof = aof.get(1).map_or("no", |s| s.trim());
            if save.is_empty() && aof == "no" {
                problems.push(Problem(
                    "Redis persistence is off (no `save` points, `appendonly no`): a restart \
                     logs everyone out. Set `appendonly yes` (or `save` points)"
                        .into(),
                ));
            }
        }
        Ok(Err(err)) => {
            println!("note: could not read the Redis configuration (CONFIG GET): {err}")
        }
        Err(_) => println!("note: reading the Redis configuration timed out"),
    }
}

#[cfg(not(feature = "redis"))]
async fn inspect_redis(_: &str, _: &mut Vec<Problem>) {}

#[cfg(feature = "postgres")]
async fn inspect_postgres(url: &str, problems: &mut Vec<Problem>) {
    let table = option_of(url, "table").unwrap_or("sessions");
    let schema = option_of(url, "schema").unwrap_or("public");
    let indexes = postgres_query(
        url,
        DIRECT_QUERY_TIMEOUT,
        "reading the Postgres indexes",
        |pool| async move {
            sqlx::query_scalar::<_, String>(
                "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND tablename = $2",
            )
            .bind(schema)
            .bind(table)
            .fetch_all(&pool)
            .await
        },
    );
    match indexes.await {
        Ok(indexes) => {
            if !indexes.iter().any(|d| d.contains("(expires_at)")) {
                problems.push(Problem(format!(
                    "Postgres table {schema}.{table} has no index on expires_at: every \
                     delete_expired scans the whole table. Run the store's migration \
                     (connect without migrate=false) or CREATE INDEX ON \"{schema}\".\"{table}\" \
                     (expires_at)"
                )));
            }
        }
        Err(err) => println!("note: {}", err.message),
    }
}

#[cfg(not(feature = "postgres"))]
async fn inspect_postgres(_: &str, _: &mut Vec<Problem>) {}

#[cfg(all(test, feature = "postgres"))]
mod tests {
    use super::*;

    /// A Postgres that hangs: the kernel completes the TCP handshake from the listener's
    /// backlog, and nothing ever answers.
    fn silent_postgres() -> (std::net::TcpListener, String) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!(
            "postgres://postgres@{}/test?table=sessions",
            listener.local_addr().expect("address")
        );
        (listener, url)
    }

    #[tokio::test]
    async fn a_direct_query_to_a_silent_postgres_fails_within_its_limit() {
        let (_listener, url) = silent_postgres();
        let started = Instant::now();
        let result = postgres_query(
            &url,
            Duration::from_millis(300),
            "probing",
            |pool| async move { sqlx::query("SELECT 1").execute(&pool).await },
        )
        .await;
        let took = started.elapsed();
        let Err(err) = result else {
            panic!("a silent server answered")
        };
        assert!(
            err.message.starts_with("probing at postgres://"),
            "{}",
            err.message
        );
        assert!(took < Duration::from_secs(3), "took {took:?}");
    }

    /// `stats`' expired count, and `check`'s index inspection and scratch-table drop, fail
    /// (or note the failure) within the command's bound instead of hanging.
    #[tokio::test]
    async fn the_commands_own_postgres_queries_are_bounded() {
        let (_listener, url) = silent_postgres();
        let started = Instant::now();
        let mut problems = Vec::new();
        let (count, dropped, ()) = tokio::join!(
            expired_count(&url, StoreKind::Postgres, 0),
            drop_postgres_table(&url),
            inspect_postgres(&url, &mut problems),
        );
        let took = started.elapsed();
        assert!(
            count.is_err(),
            "the expired count came back from a silent server"
        );
        assert!(dropped.is_err(), "the drop came back from a silent server");
        assert!(problems.is_empty(), "{:?}", problems.len());
        assert!(
            took < DIRECT_QUERY_TIMEOUT + Duration::from_secs(5),
            "took {took:?}"
        );
    }

    /// The bound does not get in the way of a server that answers.
    #[tokio::test]
    async fn a_direct_query_to_postgres_answers() {
        let url = std::env::var("SESSION_STORES_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let answer: i32 =
            postgres_query(&url, DIRECT_QUERY_TIMEOUT, "probing", |pool| async move {
                sqlx::query_scalar("SELECT 41 + 1").fetch_one(&pool).await
            })
            .await
            .unwrap_or_else(|err| panic!("{}", err.message));
        assert_eq!(answer, 42);
    }
}
