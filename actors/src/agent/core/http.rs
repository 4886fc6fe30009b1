//! The pure half of the agent's small HTTP/1.1 client (used by the fetcher, health checks and
//! readiness checks): `http://` and `https://` URLs, where a redirect leads, the response head
//! (status line and headers), how the body is framed and the size line of a chunk. The shell
//! (`agent/http.rs`) does the sockets and TLS.

use std::fmt;

/// The longest response head (status line and headers) read before giving up.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most headers a response may carry.
pub const MAX_HEADERS: usize = 128;
/// The longest chunk-size line (size, extensions and CRLF) of a chunked body.
pub const MAX_CHUNK_LINE: usize = 1024;

/// An `http://` or `https://` URL, split into what a GET needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpUrl {
    pub tls: bool,
    /// The host as written, without brackets for an IPv6 literal (`::1`).
    pub host: String,
    pub port: u16,
    /// The request target: the path (at least `/`) and the query, without the fragment.
    pub target: String,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not an http:// or https:// URL")]
    NotHttp,
    #[error("no host")]
    NoHost,
    #[error("bad port '{0}'")]
    BadPort(String),
    #[error("credentials in the URL are not supported")]
    Credentials,
    #[error("bad IPv6 host literal")]
    BadIpv6,
    #[error("control characters or spaces in the URL")]
    BadCharacters,
}

impl HttpUrl {
    pub fn parse(text: &str) -> Result<HttpUrl, UrlError> {
        let (tls, rest) = if let Some(rest) = strip_prefix_ignore_case(text, "http://") {
            (false, rest)
        } else if let Some(rest) = strip_prefix_ignore_case(text, "https://") {
            (true, rest)
        } else {
            return Err(UrlError::NotHttp);
        };
        // A space or control character would let a URL inject a header into the request line.
        if text.chars().any(|c| c.is_control() || c == ' ') {
            return Err(UrlError::BadCharacters);
        }
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, target) = rest.split_at(split);
        if authority.contains('@') {
            return Err(UrlError::Credentials);
        }
        let (host, port) = split_authority(authority, if tls { 443 } else { 80 })?;
        let target = if target.starts_with('/') { target.to_owned() } else { format!("/{target}") };
        Ok(HttpUrl { tls, host, port, target })
    }

    /// The path of the target, without the query.
    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("/")
    }

    /// The `Host` header's value: the port only when it is not the scheme's default.
    pub fn host_header(&self) -> String {
        let host = if self.host.contains(':') { format!("[{}]", self.host) } else { self.host.clone() };
        let default_port = if self.tls { 443 } else { 80 };
        if self.port == default_port { host } else { format!("{host}:{}", self.port) }
    }

    /// Where a redirect's `Location` leads from this URL: an absolute URL, a
    /// scheme-relative one (`//host/path`), an absolute path or a path relative to this one.
    pub fn redirect(&self, location: &str) -> Result<HttpUrl, UrlError> {
        let location = location.trim();
        if location.contains("://") {
            return HttpUrl::parse(location);
        }
        if let Some(rest) = location.strip_prefix("//") {
            let scheme = if self.tls { "https" } else { "http" };
            return HttpUrl::parse(&format!("{scheme}://{rest}"));
        }
        let target = if location.starts_with('/') {
            location.to_owned()
        } else {
            let directory = &self.path()[..self.path().rfind('/').map_or(0, |i| i + 1)];
            format!("{directory}{location}")
        };
        HttpUrl::parse(&format!("{}://{}{target}", if self.tls { "https" } else { "http" }, self.host_header()))
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.host_header(), self.target)
    }
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix).then(|| &text[prefix.len()..])
}

/// `host`, `host:port`, `[v6]` or `[v6]:port`.
fn split_authority(authority: &str, default_port: u16) -> Result<(String, u16), UrlError> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or(UrlError::BadIpv6)?;
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(UrlError::BadIpv6)?),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err(UrlError::NoHost);
    }
    let port = match port {
        None | Some("") => default_port,
        Some(text) => text.parse().ok().filter(|p| *p != 0).ok_or_else(|| UrlError::BadPort(text.to_owned()))?,
    };
    Ok((host.to_owned(), port))
}

/// A response's status line and headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResponseHead {
    pub status: u16,
    pub reason: String,
    /// Names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("the connection closed without an answer")]
    Empty,
    #[error("not an HTTP status line: {0:?}")]
    StatusLine(String),
    #[error("a malformed header line: {0:?}")]
    Header(String),
    #[error("more than {MAX_HEADERS} headers")]
    TooManyHeaders,
    #[error("a response head longer than {MAX_HEAD_BYTES} bytes")]
    TooLong,
    #[error("conflicting or malformed Content-Length: {0:?}")]
    ContentLength(String),
    #[error("an unsupported Transfer-Encoding: {0:?}")]
    TransferEncoding(String),
}

/// Where the head ends in what was read so far: the index just past its blank line.
pub fn head_end(bytes: &[u8]) -> Option<usize> {
    bytes.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

impl ResponseHead {
    /// Parses a complete head (up to and including its blank line).
    pub fn parse(head: &[u8]) -> Result<ResponseHead, HeadError> {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        if status_line.is_empty() {
            return Err(HeadError::Empty);
        }
        let (status, reason) = parse_status_line(status_line)?;
        let mut headers = Vec::new();
        for line in lines.take_while(|line| !line.is_empty()) {
            if headers.len() == MAX_HEADERS {
                return Err(HeadError::TooManyHeaders);
            }
            let (name, value) = line.split_once(':').ok_or_else(|| HeadError::Header(clip(line)))?;
            if name.is_empty() || name.contains([' ', '\t']) {
                return Err(HeadError::Header(clip(line)));
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        Ok(ResponseHead { status, reason, headers })
    }

    /// The first value of a header (by its lower-case name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn is_redirect(&self) -> bool {
        matches!(self.status, 301 | 302 | 303 | 307 | 308)
    }

    /// How the body is delimited (RFC 9112 §6.3): chunked wins over a length; a length must
    /// be one value (repeated values must agree); otherwise the body runs to the close.
    pub fn body_framing(&self) -> Result<BodyFraming, HeadError> {
        if let Some(encoding) = self.header("transfer-encoding") {
            let last = encoding.rsplit(',').next().unwrap_or_default().trim();
            return if last.eq_ignore_ascii_case("chunked") {
                Ok(BodyFraming::Chunked)
            } else {
                Err(HeadError::TransferEncoding(encoding.to_owned()))
            };
        }
        let mut length = None;
        for (_, value) in self.headers.iter().filter(|(n, _)| n == "content-length") {
            for part in value.split(',') {
                let parsed: u64 = part.trim().parse().map_err(|_| HeadError::ContentLength(value.clone()))?;
                if length.is_some_and(|l| l != parsed) {
                    return Err(HeadError::ContentLength(value.clone()));
                }
                length = Some(parsed);
            }
        }
        Ok(length.map_or(BodyFraming::UntilClose, BodyFraming::Length))
    }
}

fn parse_status_line(line: &str) -> Result<(u16, String), HeadError> {
    let bad = || HeadError::StatusLine(clip(line));
    let rest = line.strip_prefix("HTTP/").ok_or_else(bad)?;
    let mut parts = rest.splitn(3, ' ');
    let _version = parts.next().ok_or_else(bad)?;
    let code = parts.next().ok_or_else(bad)?;
    let status: u16 = code.parse().ok().filter(|c| (100..1000).contains(c)).ok_or_else(bad)?;
    Ok((status, parts.next().unwrap_or_default().to_owned()))
}

fn clip(text: &str) -> String {
    text.chars().take(80).collect()
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodyFraming {
    Length(u64),
    Chunked,
    UntilClose,
}

/// The size in a chunked body's size line (without its CRLF); extensions after `;` are
/// ignored, as RFC 9112 §7.1.1 allows.
pub fn chunk_size(line: &str) -> Option<u64> {
    let size = line.split(';').next().unwrap_or_default().trim();
    if size.is_empty() || size.len() > 16 {
        return None;
    }
    u64::from_str_radix(size, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> HttpUrl {
        HttpUrl::parse(text).unwrap()
    }

    #[test]
    fn urls_split_into_host_port_and_target() {
        let plain = url("http://example.com/a/b.tgz?x=1#frag");
        assert_eq!(plain, HttpUrl { tls: false, host: "example.com".into(), port: 80, target: "/a/b.tgz?x=1".into() });
        assert_eq!(plain.path(), "/a/b.tgz");
        assert_eq!(plain.host_header(), "example.com");
        let tls = url("HTTPS://h:8443");
        assert_eq!((tls.tls, tls.port, tls.target.as_str(), tls.host_header()), (true, 8443, "/", "h:8443".into()));
        let v6 = url("http://[::1]:9000/x");
        assert_eq!((v6.host.as_str(), v6.port, v6.host_header()), ("::1", 9000, "[::1]:9000".to_owned()));
        assert_eq!(url("http://h?q").target, "/?q");
        assert_eq!(url("https://h/p").to_string(), "https://h/p");
    }

    #[test]
    fn bad_urls_are_refused_with_the_reason() {
        assert_eq!(HttpUrl::parse("ftp://h/x"), Err(UrlError::NotHttp));
        assert_eq!(HttpUrl::parse("http:///x"), Err(UrlError::NoHost));
        assert_eq!(HttpUrl::parse("http://h:0/x"), Err(UrlError::BadPort("0".into())));
        assert_eq!(HttpUrl::parse("http://h:99999/x"), Err(UrlError::BadPort("99999".into())));
        assert_eq!(HttpUrl::parse("http://u:p@h/x"), Err(UrlError::Credentials));
        assert_eq!(HttpUrl::parse("http://[::1/x"), Err(UrlError::BadIpv6));
        assert_eq!(HttpUrl::parse("http://h/x y"), Err(UrlError::BadCharacters));
        assert_eq!(HttpUrl::parse("http://h/x\r\nEvil: 1"), Err(UrlError::BadCharacters));
    }

    #[test]
    fn redirects_resolve_against_the_current_url() {
        let from = url("https://h:8443/dir/file?q=1");
        assert_eq!(from.redirect("http://other/x").unwrap().to_string(), "http://other/x");
        assert_eq!(from.redirect("//cdn/y").unwrap().to_string(), "https://cdn/y");
        assert_eq!(from.redirect("/top").unwrap().to_string(), "https://h:8443/top");
        assert_eq!(from.redirect("next.tgz").unwrap().to_string(), "https://h:8443/dir/next.tgz");
        assert_eq!(from.redirect("ftp://x/y"), Err(UrlError::NotHttp));
    }

    #[test]
    fn heads_parse_with_lower_case_header_names() {
        let raw = b"HTTP/1.1 301 Moved Permanently\r\nLocation: /new\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(head_end(raw), Some(raw.len()));
        assert_eq!(head_end(b"HTTP/1.1 200 OK\r\n"), None);
        let head = ResponseHead::parse(raw).unwrap();
        assert_eq!((head.status, head.reason.as_str()), (301, "Moved Permanently"));
        assert_eq!(head.header("location"), Some("/new"));
        assert!(head.is_redirect());
        assert_eq!(head.body_framing(), Ok(BodyFraming::Length(0)));
        assert_eq!(ResponseHead::parse(b"HTTP/1.0 200\r\n\r\n").unwrap().status, 200);
    }

    #[test]
    fn malformed_heads_are_errors() {
        assert_eq!(ResponseHead::parse(b""), Err(HeadError::Empty));
        assert!(matches!(ResponseHead::parse(b"SSH-2.0-OpenSSH\r\n\r\n"), Err(HeadError::StatusLine(_))));
        assert!(matches!(ResponseHead::parse(b"HTTP/1.1 abc OK\r\n\r\n"), Err(HeadError::StatusLine(_))));
        assert!(matches!(ResponseHead::parse(b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n"), Err(HeadError::Header(_))));
        let many = format!("HTTP/1.1 200 OK\r\n{}\r\n", "X: y\r\n".repeat(MAX_HEADERS + 1));
        assert_eq!(ResponseHead::parse(many.as_bytes()), Err(HeadError::TooManyHeaders));
    }

    #[test]
    fn body_framing_follows_rfc_9112() {
        let framing = |headers: &str| {
            ResponseHead::parse(format!("HTTP/1.1 200 OK\r\n{headers}\r\n").as_bytes()).unwrap().body_framing()
        };
        assert_eq!(framing("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"), Ok(BodyFraming::Chunked));
        assert_eq!(framing("Transfer-Encoding: gzip, chunked\r\n"), Ok(BodyFraming::Chunked));
        assert!(matches!(framing("Transfer-Encoding: gzip\r\n"), Err(HeadError::TransferEncoding(_))));
        assert_eq!(framing("Content-Length: 12\r\nContent-Length: 12\r\n"), Ok(BodyFraming::Length(12)));
        assert!(matches!(framing("Content-Length: 12\r\nContent-Length: 13\r\n"), Err(HeadError::ContentLength(_))));
        assert!(matches!(framing("Content-Length: -1\r\n"), Err(HeadError::ContentLength(_))));
        assert_eq!(framing(""), Ok(BodyFraming::UntilClose));
    }

    #[test]
    fn chunk_sizes_are_hexadecimal_with_optional_extensions() {
        assert_eq!(chunk_size("1a"), Some(26));
        assert_eq!(chunk_size("FF;name=value"), Some(255));
        assert_eq!(chunk_size("0"), Some(0));
        assert_eq!(chunk_size(""), None);
        assert_eq!(chunk_size("xyz"), None);
        assert_eq!(chunk_size("11111111111111111"), None, "more than 64 bits");
    }
}
