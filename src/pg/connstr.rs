//! Connection strings, as libpq reads them: `postgres://` URLs and
//! `key=value` strings. Error messages name the part that is wrong and never
//! contain the password, so they can be logged and shown to operators.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

pub const DEFAULT_PORT: u16 = 5432;
pub const DEFAULT_USER: &str = "postgres";
pub const DEFAULT_HOST: &str = "localhost";
pub const DEFAULT_APPLICATION_NAME: &str = "shapeshard";
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

const KNOWN_KEYS: &str =
    "host, port, user, password, dbname, sslmode, sslrootcert, application_name, connect_timeout, keepalives_idle, keepalives_interval, keepalives_count, options";

#[derive(Clone, PartialEq, Eq)]
pub struct ConnConfig {
    pub host: Host,
    pub port: u16,
    pub user: String,
    pub password: Option<String>,
    pub dbname: String,
    pub sslmode: SslMode,
    /// PEM file of the certificate authorities to trust (`sslrootcert`, or
    /// `ELECTRIC_DATABASE_CA_CERTIFICATE_FILE`); None: the system's roots.
    pub sslrootcert: Option<PathBuf>,
    /// Sent as a startup parameter unless empty.
    pub application_name: String,
    /// For the whole connect and authentication; zero means no limit (as
    /// `connect_timeout=0` does in libpq).
    pub connect_timeout: Duration,
    /// TCP keepalive probes (always on, as in libpq): seconds idle before
    /// the first, seconds between them, how many unanswered before the
    /// connection is dropped. None: the OS defaults.
    pub keepalive: Keepalive,
    /// Try a host name's IPv6 addresses before its IPv4 ones
    /// (`ELECTRIC_DATABASE_USE_IPV6`); IPv4 first otherwise. Either way the
    /// other family is the fallback.
    pub prefer_ipv6: bool,
    /// Extra startup parameters, e.g. `("options", "-c statement_timeout=0")`.
    pub options: Vec<(String, String)>,
}

/// libpq's `keepalives_idle`, `keepalives_interval`, `keepalives_count`
/// (Electric's `ELECTRIC_DATABASE_TCP_KEEPALIVE_*`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Keepalive {
    pub idle_s: Option<u32>,
    pub interval_s: Option<u32>,
    pub count: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Tcp(String),
    /// The directory holding the server's `.s.PGSQL.<port>` socket.
    Unix(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

/// What is wrong with a connection string, in one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnStrError {
    message: String,
}

impl ConnStrError {
    fn new(message: impl Into<String>) -> ConnStrError {
        ConnStrError {
            message: message.into(),
        }
    }
}

impl fmt::Display for ConnStrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConnStrError {}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(host) => f.write_str(host),
            Host::Unix(dir) => write!(f, "{}", dir.display()),
        }
    }
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SslMode {
    type Err = ConnStrError;

    fn from_str(s: &str) -> Result<SslMode, ConnStrError> {
        match s {
            "disable" => Ok(SslMode::Disable),
            // `allow` tries plaintext first, which for a client without TLS
            // is the same as `disable`.
            "allow" => Ok(SslMode::Disable),
            "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            other => Err(ConnStrError::new(format!(
                "invalid sslmode {other:?}: expected disable, allow, prefer, require, verify-ca or verify-full"
            ))),
        }
    }
}

// By hand, so that `{:?}` on a config (or anything holding one) cannot leak
// the password into logs.
impl fmt::Debug for ConnConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "****"))
            .field("dbname", &self.dbname)
            .field("sslmode", &self.sslmode)
            .field("sslrootcert", &self.sslrootcert)
            .field("application_name", &self.application_name)
            .field("connect_timeout", &self.connect_timeout)
            .field("keepalive", &self.keepalive)
            .field("options", &self.options)
            .finish()
    }
}

impl FromStr for ConnConfig {
    type Err = ConnStrError;

    fn from_str(s: &str) -> Result<ConnConfig, ConnStrError> {
        ConnConfig::parse(s)
    }
}

impl ConnConfig {
    /// Parses a `postgres://` / `postgresql://` URL or a libpq
    /// `key=value ...` string.
    pub fn parse(s: &str) -> Result<ConnConfig, ConnStrError> {
        let trimmed = s.trim();
        if let Some(rest) = strip_scheme(trimmed) {
            return parse_url(rest);
        }
        if let Some((scheme, _)) = trimmed.split_once("://") {
            if !scheme.contains(['=', ' ']) {
                return Err(ConnStrError::new(format!(
                    "unsupported URL scheme {scheme:?}: use postgres:// or postgresql://"
                )));
            }
        }
        parse_key_value(trimmed)
    }

    /// The configuration as a URL with the password replaced by `****`, for
    /// logs and error messages.
    pub fn redacted(&self) -> String {
        self.to_url(Some("****"))
    }

    pub fn with_dbname(&self, dbname: &str) -> ConnConfig {
        ConnConfig {
            dbname: dbname.to_string(),
            ..self.clone()
        }
    }

    /// Where the connection goes: `host:port`, `[::1]:port` or the socket path.
    pub fn endpoint(&self) -> String {
        match &self.host {
            Host::Tcp(host) if host.contains(':') => format!("[{host}]:{}", self.port),
            Host::Tcp(host) => format!("{host}:{}", self.port),
            Host::Unix(_) => self.socket_path().unwrap_or_default().display().to_string(),
        }
    }

    /// The Unix socket file, for a Unix host.
    pub fn socket_path(&self) -> Option<PathBuf> {
        match &self.host {
            Host::Unix(dir) => Some(dir.join(format!(".s.PGSQL.{}", self.port))),
            Host::Tcp(_) => None,
        }
    }

    fn to_url(&self, password: Option<&str>) -> String {
        let mut url = String::from("postgresql://");
        url.push_str(&encode(&self.user));
        if let (Some(shown), Some(_)) = (password, &self.password) {
            url.push(':');
            url.push_str(shown);
        }
        url.push('@');
        let mut query = Vec::new();
        match &self.host {
            Host::Tcp(host) if host.contains(':') => {
                url.push('[');
                url.push_str(host);
                url.push(']');
            }
            Host::Tcp(host) => url.push_str(&encode(host)),
            Host::Unix(dir) => query.push(format!("host={}", encode(&dir.to_string_lossy()))),
        }
        url.push_str(&format!(":{}/{}", self.port, encode(&self.dbname)));
        if self.sslmode != SslMode::Prefer {
            query.push(format!("sslmode={}", self.sslmode));
        }
        if let Some(root) = &self.sslrootcert {
            query.push(format!("sslrootcert={}", encode(&root.to_string_lossy())));
        }
        if self.application_name != DEFAULT_APPLICATION_NAME {
            query.push(format!(
                "application_name={}",
                encode(&self.application_name)
            ));
        }
        if self.connect_timeout != DEFAULT_CONNECT_TIMEOUT {
            query.push(format!(
                "connect_timeout={}",
                self.connect_timeout.as_secs()
            ));
        }
        for (key, value) in &self.options {
            if key == "options" {
                query.push(format!("options={}", encode(value)));
            }
        }
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        url
    }
}

fn strip_scheme(s: &str) -> Option<&str> {
    ["postgresql://", "postgres://"].iter().find_map(|scheme| {
        let head = s.get(..scheme.len())?;
        head.eq_ignore_ascii_case(scheme)
            .then(|| &s[scheme.len()..])
    })
}

/// Values gathered from either syntax before defaults are applied.
#[derive(Default)]
struct Parts {
    host: Option<String>,
    port: Option<String>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    application_name: Option<String>,
    connect_timeout: Option<String>,
    keepalives_idle: Option<String>,
    keepalives_interval: Option<String>,
    keepalives_count: Option<String>,
    options: Option<String>,
}

impl Parts {
    /// Returns false for an unknown key.
    fn set(&mut self, key: &str, value: String) -> bool {
        let slot = match key {
            "host" => &mut self.host,
            "port" => &mut self.port,
            "user" => &mut self.user,
            "password" => &mut self.password,
            "dbname" => &mut self.dbname,
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "application_name" => &mut self.application_name,
            "connect_timeout" => &mut self.connect_timeout,
            "keepalives_idle" => &mut self.keepalives_idle,
            "keepalives_interval" => &mut self.keepalives_interval,
            "keepalives_count" => &mut self.keepalives_count,
            "options" => &mut self.options,
            _ => return false,
        };
        *slot = Some(value);
        true
    }

    fn finish(self) -> Result<ConnConfig, ConnStrError> {
        let host = match self.host.filter(|h| !h.is_empty()) {
            None => Host::Tcp(DEFAULT_HOST.to_string()),
            Some(h) if h.starts_with('/') => Host::Unix(PathBuf::from(h)),
            Some(h) if h.contains(',') => {
                return Err(ConnStrError::new(
                    "multiple hosts are not supported: give a single host",
                ))
            }
            Some(h) => Host::Tcp(h),
        };
        let port = match self.port.filter(|p| !p.is_empty()) {
            None => DEFAULT_PORT,
            Some(p) => match p.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => {
                    return Err(ConnStrError::new(format!(
                        "invalid port {p:?}: expected a number between 1 and 65535"
                    )))
                }
            },
        };
        let user = self
            .user
            .filter(|u| !u.is_empty())
            .unwrap_or_else(|| DEFAULT_USER.to_string());
        let dbname = self
            .dbname
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| user.clone());
        let sslmode = match self.sslmode.filter(|s| !s.is_empty()) {
            None => SslMode::Prefer,
            Some(s) => s.parse()?,
        };
        let connect_timeout = match self.connect_timeout.filter(|t| !t.is_empty()) {
            None => DEFAULT_CONNECT_TIMEOUT,
            Some(t) => match t.trim().parse::<i64>() {
                // libpq: zero or negative waits forever.
                Ok(secs) => Duration::from_secs(secs.max(0).unsigned_abs()),
                Err(_) => {
                    return Err(ConnStrError::new(format!(
                        "invalid connect_timeout {t:?}: expected whole seconds"
                    )))
                }
            },
        };
        let seconds = |name: &str, value: Option<String>| -> Result<Option<u32>, ConnStrError> {
            match value.filter(|v| !v.is_empty()) {
                None => Ok(None),
                Some(v) => match v.trim().parse::<u32>() {
                    Ok(n) if n > 0 => Ok(Some(n)),
                    _ => Err(ConnStrError::new(format!(
                        "invalid {name} {v:?}: expected a whole number above 0"
                    ))),
                },
            }
        };
        let keepalive = Keepalive {
            idle_s: seconds("keepalives_idle", self.keepalives_idle)?,
            interval_s: seconds("keepalives_interval", self.keepalives_interval)?,
            count: seconds("keepalives_count", self.keepalives_count)?,
        };
        Ok(ConnConfig {
            host,
            port,
            user,
            // Postgres never accepts an empty password, so `password=`
            // means none was given.
            password: self.password.filter(|p| !p.is_empty()),
            dbname,
            sslmode,
            sslrootcert: self
                .sslrootcert
                .filter(|p| !p.is_empty())
                .map(PathBuf::from),
            application_name: self
                .application_name
                .unwrap_or_else(|| DEFAULT_APPLICATION_NAME.to_string()),
            connect_timeout,
            keepalive,
            prefer_ipv6: false,
            options: self
                .options
                .filter(|o| !o.is_empty())
                .map(|o| vec![("options".to_string(), o)])
                .unwrap_or_default(),
        })
    }
}

/// `rest` is what follows `postgres://`.
fn parse_url(rest: &str) -> Result<ConnConfig, ConnStrError> {
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    // `user:pa` followed by an '@' later on most likely means the password
    // holds an unencoded '/' or '?' that cut the URL short: then the pieces
    // we would quote in an error may be bits of the password, so quote none.
    let suspect = !authority.contains('@')
        && tail.contains('@')
        && authority
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()));
    let show = |value: &str| {
        if suspect {
            String::new()
        } else {
            format!(" {value:?}")
        }
    };
    let fail = |message: String| {
        if suspect {
            ConnStrError::new(format!(
                "{message} (if the password contains '/', '?' or '@', percent-encode them as %2F, %3F, %40)"
            ))
        } else {
            ConnStrError::new(message)
        }
    };

    let mut parts = Parts::default();
    let host_port = match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            parts.user = Some(decode(user).map_err(|e| fail(format!("invalid user in URL: {e}")))?);
            if let Some(password) = password {
                // Never echo any of it, not even the bad escape.
                let password = decode(password).map_err(|_| {
                    ConnStrError::new(
                        "invalid password in URL: a '%' must start a two-digit hex escape and the result must be UTF-8",
                    )
                })?;
                parts.password = Some(password);
            }
            &authority[at + 1..]
        }
        None => authority,
    };

    let (host, port) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let close = bracketed
            .find(']')
            .ok_or_else(|| fail("invalid host in URL: '[' without a closing ']'".into()))?;
        let after = &bracketed[close + 1..];
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => {
                return Err(fail(format!(
                    "invalid host in URL: unexpected{} after ']'",
                    show(after)
                )))
            }
        };
        (&bracketed[..close], port)
    } else {
        if host_port.contains(',') {
            return Err(fail(
                "multiple hosts are not supported: give a single host".into(),
            ));
        }
        match host_port.split_once(':') {
            Some((_, port)) if port.contains(':') => {
                return Err(fail(
                    "invalid host in URL: put an IPv6 address in brackets, e.g. [::1]".into(),
                ))
            }
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    parts.host = Some(decode(host).map_err(|e| fail(format!("invalid host in URL: {e}")))?);
    if let Some(port) = port {
        let port = decode(port).map_err(|e| fail(format!("invalid port in URL: {e}")))?;
        if !port.is_empty() && !matches!(port.parse::<u16>(), Ok(p) if p != 0) {
            return Err(fail(format!(
                "invalid port{} in URL: expected a number between 1 and 65535",
                show(&port)
            )));
        }
        parts.port = Some(port);
    }

    let (path, query) = match tail.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (tail, None),
    };
    if let Some(dbname) = path.strip_prefix('/') {
        parts.dbname =
            Some(decode(dbname).map_err(|e| fail(format!("invalid database name in URL: {e}")))?);
    }

    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            fail(format!(
                "invalid URL query parameter{}: expected key=value",
                show(pair)
            ))
        })?;
        let key =
            decode(key).map_err(|e| fail(format!("invalid URL query parameter name: {e}")))?;
        let value = decode(value).map_err(|e| {
            if key == "password" {
                ConnStrError::new("invalid password in URL query: bad percent-encoding")
            } else {
                fail(format!(
                    "invalid value for URL query parameter{}: {e}",
                    show(&key)
                ))
            }
        })?;
        if !parts.set(&key, value) {
            return Err(fail(format!(
                "unknown URL query parameter{} (supported: {KNOWN_KEYS})",
                show(&key)
            )));
        }
    }
    parts.finish().map_err(|e| {
        if suspect {
            fail("invalid connection URL".into())
        } else {
            e
        }
    })
}

/// libpq's `key=value key2='quoted value'` syntax.
fn parse_key_value(s: &str) -> Result<ConnConfig, ConnStrError> {
    let mut parts = Parts::default();
    let mut chars = s.chars().peekable();
    let mut word = 0;
    // After an unquoted password, a stray word may be the rest of a password
    // with spaces in it: then it must not be quoted in the error.
    let mut after_unquoted_password = false;
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        word += 1;
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next_if_eq(&'=').is_none() {
            return Err(ConnStrError::new(if after_unquoted_password {
                "invalid connection string: a word without \"=\" follows the password; if the password contains spaces, quote it as password='...'".to_string()
            } else {
                format!(
                    "invalid connection string: expected key=value, but word {word} has no \"=\""
                )
            }));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        let quoted = chars.next_if_eq(&'\'').is_some();
        loop {
            match chars.next() {
                None if quoted => {
                    return Err(ConnStrError::new(format!(
                        "invalid connection string: unterminated quoted value for {key}"
                    )))
                }
                None => break,
                Some('\\') => match chars.next() {
                    Some(c) => value.push(c),
                    None => {
                        return Err(ConnStrError::new(format!(
                            "invalid connection string: value for {key} ends with a lone backslash"
                        )))
                    }
                },
                Some('\'') if quoted => break,
                Some(c) if !quoted && c.is_whitespace() => break,
                Some(c) => value.push(c),
            }
        }
        if !parts.set(&key, value) {
            return Err(ConnStrError::new(if after_unquoted_password {
                format!("invalid connection string: unknown parameter after the password; if the password contains spaces, quote it as password='...' (supported: {KNOWN_KEYS})")
            } else {
                format!("invalid connection string: unknown parameter {key:?} (supported: {KNOWN_KEYS})")
            }));
        }
        after_unquoted_password = key == "password" && !quoted;
    }
    parts.finish()
}

/// Percent-decoding; `+` stays a plus, as in libpq.
fn decode(s: &str) -> Result<String, String> {
    if !s.contains('%') {
        return Ok(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("'%' must be followed by two hex digits")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "percent-decoded text is not valid UTF-8".to_string())
}

fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> ConnConfig {
        ConnConfig::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn error(s: &str) -> String {
        match ConnConfig::parse(s) {
            Ok(c) => panic!("{s} parsed: {c:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn full_url() {
        let c = parse("postgres://alice:s3cret@db.example.com:6543/app?sslmode=disable&application_name=me&connect_timeout=3");
        assert_eq!(c.host, Host::Tcp("db.example.com".into()));
        assert_eq!(c.port, 6543);
        assert_eq!(c.user, "alice");
        assert_eq!(c.password.as_deref(), Some("s3cret"));
        assert_eq!(c.dbname, "app");
        assert_eq!(c.sslmode, SslMode::Disable);
        assert_eq!(c.application_name, "me");
        assert_eq!(c.connect_timeout, Duration::from_secs(3));
        assert!(c.options.is_empty());
    }

    #[test]
    fn url_defaults() {
        for url in [
            "postgres://",
            "postgresql://",
            "postgres:///",
            "postgres://@",
            "POSTGRES://",
        ] {
            let c = parse(url);
            assert_eq!(c.host, Host::Tcp("localhost".into()), "{url}");
            assert_eq!(c.port, 5432);
            assert_eq!(c.user, "postgres");
            assert_eq!(c.password, None);
            assert_eq!(c.dbname, "postgres");
            assert_eq!(c.sslmode, SslMode::Prefer);
            assert_eq!(c.application_name, "shapeshard");
            assert_eq!(c.connect_timeout, Duration::from_secs(10));
        }
        // dbname defaults to the user.
        let c = parse("postgresql://bob@host");
        assert_eq!(c.dbname, "bob");
        // An empty host with a port.
        let c = parse("postgresql://bob@:5433/x");
        assert_eq!(c.host, Host::Tcp("localhost".into()));
        assert_eq!(c.port, 5433);
        // An empty password is no password.
        assert_eq!(parse("postgres://u:@h/d").password, None);
    }

    #[test]
    fn url_percent_decoding_everywhere() {
        let c = parse("postgres://us%40er:p%40ss%2Fw%3Ard@ho%73t:5432/my%20db?application_name=a%26b&options=-c%20search_path%3Dx");
        assert_eq!(c.user, "us@er");
        assert_eq!(c.password.as_deref(), Some("p@ss/w:rd"));
        assert_eq!(c.host, Host::Tcp("host".into()));
        assert_eq!(c.dbname, "my db");
        assert_eq!(c.application_name, "a&b");
        assert_eq!(
            c.options,
            vec![("options".to_string(), "-c search_path=x".to_string())]
        );
        // UTF-8 and '+' (which stays a plus).
        let c = parse("postgres://u:caf%C3%A9+x@h/d");
        assert_eq!(c.password.as_deref(), Some("café+x"));
        // The last '@' ends the user info, so a raw '@' in the password works.
        let c = parse("postgres://u:p@ss@h/d");
        assert_eq!(c.password.as_deref(), Some("p@ss"));
        assert_eq!(c.host, Host::Tcp("h".into()));
    }

    #[test]
    fn url_ipv6() {
        let c = parse("postgres://u@[::1]:5433/d");
        assert_eq!(c.host, Host::Tcp("::1".into()));
        assert_eq!(c.port, 5433);
        assert_eq!(c.endpoint(), "[::1]:5433");
        let c = parse("postgres://[fe80::1%25eth0]/d");
        assert_eq!(c.host, Host::Tcp("fe80::1%eth0".into()));
        assert_eq!(c.port, 5432);
        assert!(error("postgres://::1/d").contains("brackets"));
        assert!(error("postgres://[::1/d").contains("']'"));
    }

    #[test]
    fn url_unix_sockets() {
        let c = parse("postgres://u@%2Fvar%2Frun%2Fpostgresql/d");
        assert_eq!(c.host, Host::Unix("/var/run/postgresql".into()));
        assert_eq!(
            c.socket_path(),
            Some(PathBuf::from("/var/run/postgresql/.s.PGSQL.5432"))
        );
        let c = parse("postgresql:///d?host=/tmp/pg&port=54329");
        assert_eq!(c.host, Host::Unix("/tmp/pg".into()));
        assert_eq!(c.endpoint(), "/tmp/pg/.s.PGSQL.54329");
        let c = parse("postgresql://u@/d?host=%2Ftmp");
        assert_eq!(c.host, Host::Unix("/tmp".into()));
        assert_eq!(c.host.to_string(), "/tmp");
    }

    #[test]
    fn url_query_overrides() {
        let c =
            parse("postgres://a@h:1/d?user=b&port=2&dbname=e&host=k&password=pw&sslmode=require");
        assert_eq!((c.user.as_str(), c.port, c.dbname.as_str()), ("b", 2, "e"));
        assert_eq!(c.host, Host::Tcp("k".into()));
        assert_eq!(c.password.as_deref(), Some("pw"));
        assert_eq!(c.sslmode, SslMode::Require);
        // connect_timeout=0 means no limit.
        assert_eq!(
            parse("postgres://h?connect_timeout=0").connect_timeout,
            Duration::ZERO
        );
        // A trailing '&' is harmless.
        assert_eq!(
            parse("postgres://h?sslmode=disable&").sslmode,
            SslMode::Disable
        );
    }

    #[test]
    fn key_value_form() {
        let c =
            parse("host=db port=6000 user=alice password=secret dbname=app sslmode=verify-full");
        assert_eq!(c.host, Host::Tcp("db".into()));
        assert_eq!(c.port, 6000);
        assert_eq!(c.user, "alice");
        assert_eq!(c.password.as_deref(), Some("secret"));
        assert_eq!(c.dbname, "app");
        assert_eq!(c.sslmode, SslMode::VerifyFull);

        let c = parse(
            r"  user = bob   password='it\'s a \\ secret' dbname='' host=/tmp application_name=x\ y ",
        );
        assert_eq!(c.user, "bob");
        assert_eq!(c.password.as_deref(), Some(r"it's a \ secret"));
        assert_eq!(c.dbname, "bob");
        assert_eq!(c.host, Host::Unix("/tmp".into()));
        assert_eq!(c.application_name, "x y");

        let c = parse("");
        assert_eq!(c.host, Host::Tcp("localhost".into()));
        assert_eq!(
            (c.port, c.user.as_str(), c.dbname.as_str()),
            (5432, "postgres", "postgres")
        );
        assert_eq!(c.sslmode, SslMode::Prefer);

        let c = parse("options='-c statement_timeout=0' connect_timeout=4");
        assert_eq!(
            c.options,
            vec![("options".into(), "-c statement_timeout=0".into())]
        );
        assert_eq!(c.connect_timeout, Duration::from_secs(4));
    }

    #[test]
    fn bad_inputs_name_the_part() {
        let e = error("postgres://u:pw@h:abc/d");
        assert!(e.contains("invalid port \"abc\""), "{e}");
        let e = error("postgres://u:pw@h:0/d");
        assert!(e.contains("port"), "{e}");
        let e = error("postgres://u:pw@h:70000/d");
        assert!(e.contains("port"), "{e}");
        let e = error("host=h port=x");
        assert!(e.contains("invalid port \"x\""), "{e}");
        let e = error("postgres://h/d?sslmode=maybe");
        assert!(e.contains("invalid sslmode \"maybe\""), "{e}");
        let e = error("postgres://h/d?frobnicate=1");
        assert!(
            e.contains("unknown URL query parameter \"frobnicate\""),
            "{e}"
        );
        let e = error("host=h frobnicate=1");
        assert!(e.contains("unknown parameter \"frobnicate\""), "{e}");
        let e = error("postgres://h/d?connect_timeout=soon");
        assert!(e.contains("connect_timeout"), "{e}");
        let e = error("postgres://h1,h2/d");
        assert!(e.contains("multiple hosts"), "{e}");
        let e = error("mysql://h/d");
        assert!(e.contains("scheme \"mysql\""), "{e}");
        let e = error("host=h user='bob");
        assert!(e.contains("unterminated"), "{e}");
        let e = error("just-a-word");
        assert!(e.contains("word 1"), "{e}");
        let e = error("postgres://h/d%ZZ");
        assert!(e.contains("database name"), "{e}");
        let e = error("postgres://h/d?sslmode");
        assert!(e.contains("key=value"), "{e}");
        // An '@' in the query alone does not hide the details.
        let e = error("postgres://h:5432/d?application_name=me@x&sslmode=bad");
        assert!(e.contains("invalid sslmode \"bad\""), "{e}");
    }

    #[test]
    fn errors_never_contain_the_password() {
        let cases = [
            // A '/' in an unencoded password cuts the URL short.
            ("postgres://u:hunter/2@h:5432/d", "hunter"),
            ("postgres://u:hun?ter2@h/d", "hun"),
            ("postgres://u:?hunter2=x@h/d", "hunter2"),
            ("postgres://u:hunter%2@h/d", "hunter"),
            ("postgres://u:hunter2@h/d?password=%zz", "hunter2"),
            ("postgres://u:hunter2@h:bad/d", "hunter2"),
            ("host=h password=hunter2 bad=1", "hunter2"),
            ("host=h password=hunter two", "two"),
            ("host=h password=hunter two=2", "two"),
            ("host=h password='hunter2", "hunter2"),
        ];
        for (input, secret) in cases {
            let e = error(input);
            assert!(!e.contains(secret), "{input} -> {e}");
            assert!(!e.contains('\n'), "{input} -> {e}");
        }
        let e = error("postgres://u:hunter/2@h:5432/d");
        assert!(e.contains("percent-encode"), "{e}");
    }

    #[test]
    fn redaction() {
        let c = parse("postgres://alice:hunter2@db:5433/app?sslmode=disable");
        let r = c.redacted();
        assert_eq!(r, "postgresql://alice:****@db:5433/app?sslmode=disable");
        assert!(!format!("{c:?}").contains("hunter2"));
        let c = parse("postgres://u@%2Ftmp%2Fpg/d%20b?application_name=a%20b&connect_timeout=3");
        let r = c.redacted();
        assert_eq!(
            r,
            "postgresql://u@:5432/d%20b?host=%2Ftmp%2Fpg&application_name=a%20b&connect_timeout=3"
        );
        assert_eq!(parse(&r), c);
        let c = parse("postgres://u:x@[::1]/d?options=-c%20a%3Db");
        let r = c.redacted();
        assert_eq!(r, "postgresql://u:****@[::1]:5432/d?options=-c%20a%3Db");
        let mut expected = c.clone();
        expected.password = Some("****".into());
        assert_eq!(parse(&r), expected);
    }

    #[test]
    fn with_dbname_keeps_the_rest() {
        let c = parse("postgres://u:p@h:1/a");
        let d = c.with_dbname("b");
        assert_eq!(d.dbname, "b");
        assert_eq!(d.password.as_deref(), Some("p"));
        assert_eq!((d.port, d.user.as_str()), (1, "u"));
    }
}
