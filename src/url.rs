//! The one store-URL parser: scheme, user info, hosts, location, decoded options, and
//! redaction. [`connect`](crate::connect()), each backend's URL options and the
//! `session-stores` command all read a URL through [`StoreUrl`], so that they agree on
//! what a URL names.
//!
//! Store URLs are not all URLs the `url` crate accepts as they are: `sqlite:relative/path`,
//! `sqlite::memory:`, `file://relative/dir` and `redis+cluster://a:1,b:2` (a host list)
//! have no standard form. Percent-decoding is the `percent-encoding` crate's; what is done
//! by hand is only the split into parts, with one rule that the crate cannot follow: the
//! user info is found before the query, so that a password holding `?`, `#`, `/` or `@`
//! never spills into the options, and never into an error.

// Which parts a build uses depends on the backends it enables.
#![cfg_attr(
    not(all(feature = "postgres", feature = "redis", feature = "cli")),
    allow(dead_code)
)]

use std::fmt;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};

use crate::error::{Error, Result};

/// The kind of store a URL selects. See the [module docs](mod@crate::connect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreKind {
    /// `memory://`.
    Memory,
    /// `file://`.
    File,
    /// `sqlite:`.
    Sqlite,
    /// `postgres://`, `postgresql://`.
    Postgres,
    /// `mysql://`, `mariadb://`.
    MySql,
    /// `redis://`, `rediss://`, `redis+unix://`.
    Redis,
    /// `redis+cluster://`, `rediss+cluster://`.
    RedisCluster,
}

impl StoreKind {
    /// The kind of store `url` selects, from its scheme alone (no I/O). Fails with
    /// [`Error::Config`] for an unknown scheme; this does not check that the feature is on.
    pub fn of(url: &str) -> Result<StoreKind> {
        let scheme = scheme_of(url)?;
        Ok(match scheme.as_str() {
            "memory" => StoreKind::Memory,
            "file" => StoreKind::File,
            "sqlite" => StoreKind::Sqlite,
            "postgres" | "postgresql" => StoreKind::Postgres,
            "mysql" | "mariadb" => StoreKind::MySql,
            "redis" | "rediss" | "redis+unix" | "unix" => StoreKind::Redis,
            "redis+cluster" | "rediss+cluster" => StoreKind::RedisCluster,
            _ => {
                return Err(Error::config(format!(
                    "unknown session store URL scheme `{scheme}`: expected memory://, file://, \
                     sqlite:, postgres://, mysql://, redis:// or redis+cluster://"
                )));
            }
        })
    }

    /// The cargo feature of session-stores this kind of store needs.
    pub fn feature(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::File => "file",
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
            StoreKind::MySql => "mysql",
            StoreKind::Redis | StoreKind::RedisCluster => "redis",
        }
    }

    /// Whether this build has the feature this kind of store needs.
    pub fn is_enabled(self) -> bool {
        match self {
            StoreKind::Memory => cfg!(feature = "memory"),
            StoreKind::File => cfg!(feature = "file"),
            StoreKind::Sqlite => cfg!(feature = "sqlite"),
            StoreKind::Postgres => cfg!(feature = "postgres"),
            StoreKind::MySql => cfg!(feature = "mysql"),
            StoreKind::Redis | StoreKind::RedisCluster => cfg!(feature = "redis"),
        }
    }

    /// The store's name, such as `"SQLite"`.
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Memory => "memory",
            StoreKind::File => "JSON files",
            StoreKind::Sqlite => "SQLite",
            StoreKind::Postgres => "Postgres",
            StoreKind::MySql => "MySQL",
            StoreKind::Redis => "Redis",
            StoreKind::RedisCluster => "Redis Cluster",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A store URL taken apart. Its `Debug` output shows the URL redacted.
#[derive(Clone)]
pub(crate) struct StoreUrl {
    kind: StoreKind,
    /// The scheme as written, lowercased (`rediss`, `postgresql`, `redis+cluster`, ...).
    scheme: String,
    /// Whether `//` followed the scheme.
    slashes: bool,
    /// The decoded user and password of a networked store's URL.
    user: Option<String>,
    password: Option<String>,
    /// The host list as written (`h:1`, `a:1,b:2`, `[::1]:5432`), empty when there is none.
    hosts: String,
    /// The path as written (`/db`, `/0`), or for the local stores everything between the
    /// scheme and the query.
    raw_path: String,
    /// The options of the query, in order.
    options: Vec<UrlOption>,
    /// The fragment as written, without its `#`.
    fragment: Option<String>,
}

/// One `key=value` option of a store URL's query.
#[derive(Clone)]
pub(crate) struct UrlOption {
    /// The decoded key.
    pub(crate) key: String,
    /// The decoded value.
    pub(crate) value: String,
    /// The option as written, `key=value`.
    pub(crate) raw: String,
}

/// What to percent-encode in a user name or password that a driver parses again: all but
/// the unreserved characters.
const USERINFO: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'/')
    .add(b':')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'^')
    .add(b'`')
    .add(b'{')
    .add(b'|')
    .add(b'}');

/// What to percent-encode in an option's key or value: the query's own delimiters.
const OPTION: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'=');

/// The options whose value is a password: redacted wherever a URL is shown.
const PASSWORD_OPTIONS: &[&str] = &["password", "pass", "pwd"];

/// The options naming the environment variable of a wrapper's keys.
pub(crate) const HASH_IDS_OPTION: &str = "hash_ids_key_env";
/// See [`HASH_IDS_OPTION`].
pub(crate) const ENCRYPTION_OPTION: &str = "encryption_keys_env";

impl StoreUrl {
    /// Parses `url`. Fails with [`Error::Config`] for an unknown scheme, a malformed
    /// `%`-escape, or escapes that are not UTF-8. The error never holds the URL.
    pub(crate) fn parse(url: &str) -> Result<StoreUrl> {
        let kind = StoreKind::of(url)?;
        let scheme = scheme_of(url)?;
        let rest = &url[scheme.len() + 1..];
        let (slashes, rest) = match rest.strip_prefix("//") {
            Some(rest) => (true, rest),
            None => (false, rest),
        };
        let networked = matches!(
            kind,
            StoreKind::Postgres | StoreKind::MySql | StoreKind::Redis | StoreKind::RedisCluster
        );
        let (userinfo, rest) = if networked && slashes {
            split_userinfo(rest)
        } else {
            (None, rest)
        };
        let (rest, fragment) = if networked {
            match rest.split_once('#') {
                Some((rest, fragment)) => (rest, Some(fragment.to_string())),
                None => (rest, None),
            }
        } else {
            (rest, None)
        };
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (hosts, raw_path) = if networked && slashes {
            let end = location.find('/').unwrap_or(location.len());
            location.split_at(end)
        } else {
            ("", location)
        };
        let (user, password) = match userinfo {
            Some(info) => {
                let (user, password) = match info.split_once(':') {
                    Some((user, password)) => (user, Some(decode(password)?)),
                    None => (info, None),
                };
                (Some(decode(user)?), password)
            }
            None => (None, None),
        };
        let mut options = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            options.push(UrlOption {
                key: decode(key)?,
                value: decode(value)?,
                raw: pair.to_string(),
            });
        }
        // The location is checked to decode now, so that `location()` cannot fail later.
        decode(raw_path)?;
        Ok(StoreUrl {
            kind,
            scheme,
            slashes,
            user,
            password,
            hosts: hosts.to_string(),
            raw_path: raw_path.to_string(),
            options,
            fragment,
        })
    }

    /// The kind of store the scheme selects.
    pub(crate) fn kind(&self) -> StoreKind {
        self.kind
    }

    /// Whether the scheme asks for TLS (`rediss`, `rediss+cluster`).
    pub(crate) fn is_tls(&self) -> bool {
        self.scheme.starts_with("rediss")
    }

    /// The decoded location: the path of a local store (a directory, a database file,
    /// `:memory:`), empty when there is none.
    pub(crate) fn location(&self) -> String {
        decode(&self.raw_path).unwrap_or_default()
    }

    /// The host list as written, split at commas and trimmed (a cluster's nodes).
    pub(crate) fn hosts(&self) -> Vec<&str> {
        self.hosts
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .collect()
    }

    /// The options of the query, in order.
    pub(crate) fn options(&self) -> &[UrlOption] {
        &self.options
    }

    /// The decoded value of the last option named `key`: the one that wins, as in
    /// every backend's option parsing.
    #[cfg(test)]
    pub(crate) fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .rev()
            .find(|option| option.key == key)
            .map(|option| option.value.as_str())
    }

    /// The same URL with the options `drop` is true for taken out.
    pub(crate) fn without(&self, drop: impl Fn(&str) -> bool) -> StoreUrl {
        let mut url = self.clone();
        url.options.retain(|option| !drop(&option.key));
        url
    }

    /// The same URL without the wrappers' options ([`HASH_IDS_OPTION`],
    /// [`ENCRYPTION_OPTION`]): what the backend itself reads.
    pub(crate) fn without_wrappers(&self) -> StoreUrl {
        self.without(|key| key == HASH_IDS_OPTION || key == ENCRYPTION_OPTION)
    }

    /// The same URL with the option `key` set to `value`, replacing every option of that
    /// name.
    pub(crate) fn with_option(&self, key: &str, value: &str) -> StoreUrl {
        let mut url = self.without(|k| k == key);
        url.options.push(UrlOption {
            key: key.to_string(),
            value: value.to_string(),
            raw: format!(
                "{}={}",
                utf8_percent_encode(key, OPTION),
                utf8_percent_encode(value, OPTION)
            ),
        });
        url
    }

    /// The same URL with another scheme (a cluster's node URLs).
    pub(crate) fn with_scheme(&self, scheme: &str) -> StoreUrl {
        let mut url = self.clone();
        url.scheme = scheme.to_string();
        url
    }

    /// The same URL at another location (a local store's path), encoded as needed.
    pub(crate) fn with_location(&self, location: &str) -> StoreUrl {
        const PATH: &AsciiSet = &CONTROLS.add(b' ').add(b'#').add(b'%').add(b'?');
        let mut url = self.clone();
        url.raw_path = utf8_percent_encode(location, PATH).to_string();
        url
    }

    /// The URL as text, for a driver (which parses it again) or for `connect`: the user
    /// info percent-encoded, each host given by `host` (all of them by default), the
    /// options as written. Holds the password: never for a message.
    pub(crate) fn to_url_with_hosts(&self, hosts: &str) -> String {
        self.render(hosts, false)
    }

    /// The URL as text; see [`to_url_with_hosts`](Self::to_url_with_hosts).
    pub(crate) fn to_url(&self) -> String {
        self.render(&self.hosts, false)
    }

    /// The URL for log lines and errors: the password, password options and anything
    /// given where a key's variable name belongs replaced by `***`.
    pub(crate) fn redacted(&self) -> String {
        self.render(&self.hosts, true)
    }

    /// The URL as text with `hosts`; with `redact`, every secret replaced by `***`.
    fn render(&self, hosts: &str, redact: bool) -> String {
        let mut text = format!("{}:", self.scheme);
        if self.slashes {
            text.push_str("//");
        }
        if let Some(user) = &self.user {
            text.push_str(&utf8_percent_encode(user, USERINFO).to_string());
            match &self.password {
                Some(_) if redact => text.push_str(":***"),
                Some(password) => {
                    text.push(':');
                    text.push_str(&utf8_percent_encode(password, USERINFO).to_string());
                }
                None => {}
            }
            text.push('@');
        }
        text.push_str(hosts);
        text.push_str(&self.raw_path);
        let options: Vec<String> = self
            .options
            .iter()
            .map(|option| {
                if redact && is_secret_option(&option.key, &option.value) {
                    format!("{}=***", option.raw.split('=').next().unwrap_or_default())
                } else {
                    option.raw.clone()
                }
            })
            .collect();
        if !options.is_empty() {
            text.push('?');
            text.push_str(&options.join("&"));
        }
        if let Some(fragment) = &self.fragment {
            text.push('#');
            text.push_str(fragment);
        }
        text
    }
}

impl fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("StoreUrl").field(&self.redacted()).finish()
    }
}

/// Whether an option's value must not be shown: a password, or a wrapper's key option
/// whose value is not the name of a variable (a key pasted where its variable's name goes).
fn is_secret_option(key: &str, value: &str) -> bool {
    let key = key.to_ascii_lowercase();
    PASSWORD_OPTIONS.contains(&key.as_str())
        || ((key == HASH_IDS_OPTION || key == ENCRYPTION_OPTION) && !is_variable_name(value))
}

/// Whether `value` looks like keys rather than the name of their variable: 32 or more
/// hexadecimal digits, or a comma-separated list of such.
pub(crate) fn looks_like_keys(value: &str) -> bool {
    value
        .split(',')
        .all(|part| part.len() >= 32 && part.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Whether `name` can be the name of an environment variable as a shell writes one
/// (letters, digits and `_`, not starting with a digit) and does not look like keys
/// ([`looks_like_keys`]).
pub(crate) fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !looks_like_keys(name)
}

/// Splits the user info off the part after `//`: `(Some("user:password"), "hosts/path?...")`.
///
/// The user info ends at an `@`. A password may hold `?`, `#`, `/` and `@` unencoded, and a
/// query may hold `@` (`?user=me@corp`): when an `@` comes before any `/`, the user info
/// runs to the last `@` before the host list's `/`; when a `/` comes first, it runs to the
/// last `@`, unless that `@` sits in what reads as the query's options.
fn split_userinfo(rest: &str) -> (Option<&str>, &str) {
    let Some(first_at) = rest.find('@') else {
        return (None, rest);
    };
    let first_slash = rest.find('/').unwrap_or(rest.len());
    let end = if first_at < first_slash {
        // The last `@` before the first `/` that follows the first `@`.
        let slash_after = rest[first_at..]
            .find('/')
            .map_or(rest.len(), |i| first_at + i);
        rest[..slash_after].rfind('@').unwrap_or(first_at)
    } else {
        // A `/` first: either a password holding `/`, or an `@` in the path or the query
        // (`db/app?user=me@corp`). The `@` is in the query when what lies between the
        // first `?` and the `@` reads as options (`key=value&key=...`).
        let at = rest.rfind('@').unwrap_or(first_at);
        if let Some(query) = rest[..at].find('?')
            && reads_as_options(&rest[query + 1..at])
        {
            return (None, rest);
        }
        at
    };
    (Some(&rest[..end]), &rest[end + 1..])
}

/// Whether `text` reads as the start of a query: `key=value` pairs joined by `&`, each key
/// a name of letters, digits, `_` and `-`.
fn reads_as_options(text: &str) -> bool {
    text.split('&').all(|pair| {
        pair.split_once('=').is_some_and(|(key, _)| {
            !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'%'))
        })
    })
}

/// The scheme of `url`, lowercased; `sqlite::memory:` and `sqlite:path` have no `//`.
pub(crate) fn scheme_of(url: &str) -> Result<String> {
    let bad =
        || Error::config("a session store URL needs a scheme, such as memory:// or sqlite://");
    let end = url.find(':').ok_or_else(bad)?;
    let scheme = &url[..end];
    if scheme.is_empty()
        || !scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    {
        return Err(bad());
    }
    Ok(scheme.to_ascii_lowercase())
}

/// Percent-decodes `text`, refusing a malformed escape (`%zz`, a lone `%`) and escapes that
/// do not decode to UTF-8. The error never holds the text.
pub(crate) fn decode(text: &str) -> Result<String> {
    let bytes = text.as_bytes();
    for (at, _) in text.match_indices('%') {
        let escape = bytes.get(at + 1..at + 3);
        if !escape.is_some_and(|hex| hex.iter().all(u8::is_ascii_hexdigit)) {
            return Err(Error::config(
                "a session store URL has a malformed %-escape",
            ));
        }
    }
    percent_decode_str(text)
        .decode_utf8()
        .map(|text| text.into_owned())
        .map_err(|err| Error::Config {
            message: "a session store URL's %-escapes do not decode to UTF-8".into(),
            source: Some(Box::new(err)),
        })
}

/// `url` with every password replaced by `***`; see [`crate::connect::redact`].
pub(crate) fn redact(url: &str) -> String {
    match StoreUrl::parse(url) {
        Ok(parsed) => parsed.redacted(),
        Err(_) => redact_unparsed(url),
    }
}

/// The redaction of a URL [`StoreUrl`] does not parse (an unknown scheme, a bad escape):
/// everything between `//` and the last `@` is taken for user info, and options are
/// matched by their raw names.
fn redact_unparsed(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => match url.split_once(':') {
            Some((scheme, rest)) => (format!("{scheme}:"), rest),
            None => return url.to_string(),
        },
    };
    let rest = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{hosts}"),
            None => format!("{userinfo}@{hosts}"),
        },
        None => rest.to_string(),
    };
    let rest = match rest.split_once('?') {
        Some((location, query)) => {
            let options: Vec<String> = query
                .split('&')
                .map(|option| {
                    let (key, value) = option.split_once('=').unwrap_or((option, ""));
                    let decoded = decode(key).unwrap_or_else(|_| key.to_string());
                    if is_secret_option(&decoded, value) {
                        format!("{key}=***")
                    } else {
                        option.to_string()
                    }
                })
                .collect();
            format!("{location}?{}", options.join("&"))
        }
        None => rest,
    };
    format!("{scheme}{rest}")
}

/// An option of a store URL that the store does not know: an [`Error::Config`] that names
/// it and the known ones (`known`).
pub(crate) fn unknown_option(scheme: &str, key: &str, known: &str) -> Error {
    Error::config(format!(
        "unknown option `{key}` in a {scheme} session store URL (known: {known})"
    ))
}

/// A store's URL options: the names of one backend's own options, as an enum (each backend
/// has one), parsed with no catch-all, so that an option someone adds is matched everywhere
/// or is a compile error.
pub(crate) trait UrlOptionName: Sized + Copy + 'static {
    /// Every option, in the order the error message lists them.
    const ALL: &'static [Self];
    /// The option's name in a URL.
    fn name(self) -> &'static str;
    /// The option named `key`, if it is one of these.
    fn of(key: &str) -> Option<Self> {
        Self::ALL
            .iter()
            .copied()
            .find(|option| option.name() == key)
    }
    /// The names of every option, comma-separated, for an error message.
    fn names() -> String {
        Self::ALL
            .iter()
            .map(|option| option.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Parses a `true`/`false` option.
pub(crate) fn parse_bool(key: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        other => Err(Error::config(format!(
            "the session store URL option `{key}` is `{other}`, not true or false"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> StoreUrl {
        StoreUrl::parse(url).unwrap_or_else(|err| panic!("{url}: {err}"))
    }

    #[test]
    fn local_locations_and_options_are_decoded() {
        let url = parse("sqlite://my%20dir/s.db?table=web%5Fsessions");
        assert_eq!(url.location(), "my dir/s.db");
        assert_eq!(url.option("table"), Some("web_sessions"));
        assert_eq!(parse("sqlite::memory:").location(), ":memory:");
        assert_eq!(parse("sqlite://:memory:").location(), ":memory:");
        assert_eq!(parse("sqlite:rel/s.db").location(), "rel/s.db");
        assert_eq!(parse("file:///var/lib/s").location(), "/var/lib/s");
        assert_eq!(parse("file://rel/dir").location(), "rel/dir");
        assert_eq!(parse("memory://?capacity=3").location(), "");
        assert!(StoreUrl::parse("file:///a%zz").is_err());
        assert!(StoreUrl::parse("file:///a%ff").is_err());
        assert!(StoreUrl::parse("file:///a%").is_err());
        assert!(StoreUrl::parse("memory://?capacity=%zz").is_err());
    }

    #[test]
    fn the_last_option_of_a_name_wins() {
        let url = parse("sqlite://a.db?table=one&table=two");
        assert_eq!(url.option("table"), Some("two"));
        let url = url.with_option("table", "three x");
        assert_eq!(url.option("table"), Some("three x"));
        assert_eq!(url.to_url(), "sqlite://a.db?table=three%20x");
    }

    #[test]
    fn passwords_with_delimiters_stay_in_the_user_info() {
        for password in [
            "pa?ss", "pa#ss", "pa/ss", "pa@ss", "p%3Fa", "a?b#c@d", "?", "@",
        ] {
            let text = format!("postgres://u:{password}@db.example:5432/app?sslmode=disable");
            let url = parse(&text);
            let expected = decode(password).unwrap_or_else(|_| password.to_string());
            assert_eq!(url.password.as_deref(), Some(expected.as_str()), "{text}");
            assert_eq!(url.user.as_deref(), Some("u"));
            assert_eq!(url.hosts(), ["db.example:5432"], "{text}");
            assert_eq!(url.location(), "/app", "{text}");
            assert_eq!(url.option("sslmode"), Some("disable"), "{text}");
            let shown = url.redacted();
            assert_eq!(
                shown, "postgres://u:***@db.example:5432/app?sslmode=disable",
                "{text}"
            );
            assert_eq!(redact(&text), shown);
            // The driver gets the password encoded, so that it parses it back whole.
            let driver = url.to_url();
            let again = parse(&driver);
            assert_eq!(again.password, url.password, "{driver}");
        }
    }

    #[test]
    fn an_at_in_the_query_is_not_user_info() {
        let url = parse("postgres://db/app?user=me@corp&password=s3cret");
        assert_eq!(url.user, None);
        assert_eq!(url.hosts(), ["db"]);
        assert_eq!(url.option("user"), Some("me@corp"));
        assert_eq!(
            url.redacted(),
            "postgres://db/app?user=me@corp&password=***"
        );
    }

    #[test]
    fn cluster_hosts_and_unix_urls() {
        let url = parse("redis+cluster://u:p@a:1, b:2,?key_prefix=x%3A#insecure");
        assert_eq!(url.hosts(), ["a:1", "b:2"]);
        assert_eq!(url.option("key_prefix"), Some("x:"));
        assert_eq!(url.fragment.as_deref(), Some("insecure"));
        assert_eq!(
            url.redacted(),
            "redis+cluster://u:***@a:1, b:2,?key_prefix=x%3A#insecure"
        );
        let url = parse("redis+unix:///run/redis.sock?pass=s3cret&db=1");
        assert_eq!(url.location(), "/run/redis.sock");
        assert_eq!(url.redacted(), "redis+unix:///run/redis.sock?pass=***&db=1");
        assert_eq!(
            redact("unix:/run/redis.sock?pass=s3cret"),
            "unix:/run/redis.sock?pass=***"
        );
    }

    #[test]
    fn redaction_covers_encoded_names_and_pasted_keys() {
        let key = "ab".repeat(32);
        assert_eq!(redact("memory://?p%61ss=s3cret"), "memory://?p%61ss=***");
        assert_eq!(
            redact(&format!("memory://?hash_ids_key_env={key}")),
            "memory://?hash_ids_key_env=***"
        );
        assert_eq!(
            redact("memory://?hash_ids_key_env=SESSION_KEY"),
            "memory://?hash_ids_key_env=SESSION_KEY"
        );
        // A URL that does not parse is redacted all the same.
        assert_eq!(
            redact(&format!(
                "mongodb://u:pw@h/db?encryption_keys_env={key}&password=x"
            )),
            "mongodb://u:***@h/db?encryption_keys_env=***&password=***"
        );
        let debug = format!("{:?}", parse("postgres://u:s3cret@h/db"));
        assert!(!debug.contains("s3cret"), "{debug}");
    }

    #[test]
    fn variable_names() {
        assert!(is_variable_name("SESSION_KEY"));
        assert!(is_variable_name("_k1"));
        assert!(!is_variable_name(""));
        assert!(!is_variable_name("1KEY"));
        assert!(!is_variable_name(&"ab".repeat(32)), "a key of letters only");
        assert!(!is_variable_name(&"0f".repeat(32)));
        assert!(!is_variable_name("a-b"));
    }
}
