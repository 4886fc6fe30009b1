//! The agent's small HTTP/1.1 client on tokio, shared by health checks, Marathon's readiness
//! checks (`http_head`: the start of an answer, its status line) and the fetcher (`get`: a
//! whole GET with redirects, `Content-Length`, chunked or to-the-close bodies, streamed).
//!
//! TLS is tokio-rustls with the ring provider, in two modes: `unchecked_tls` checks the
//! server's signatures but not who signed its certificate (Mesos's health checks do not verify
//! either — tasks rarely hold certificates for 127.0.0.1); `verified_tls` checks the chain
//! against a CA bundle (the system's by default), as a download from the internet must.
//!
//! Parsing is the pure `core/http.rs`; this module moves bytes. Every connect, read and write
//! of `get` is bounded by a stall timeout (no progress for that long fails), not by a deadline
//! for the whole transfer, so a large artifact on a slow link still arrives while a dead peer
//! is noticed.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::core::http::{
    BodyFraming, HeadError, HttpUrl, MAX_CHUNK_LINE, MAX_HEAD_BYTES, ResponseHead, UrlError, chunk_size, head_end,
};

/// The most of an HTTP answer `http_head` reads to find its status line.
const MAX_STATUS_LINE: usize = 8 * 1024;
/// How much is read from the socket at a time.
const READ_BUFFER: usize = 64 * 1024;

/// A byte stream a request can go over: plain TCP or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS with {0}: {1}")]
    Tls(String, String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("no progress for {} s", .0.as_secs_f64())]
    Stalled(Duration),
    #[error("a bad answer: {0}")]
    Head(#[from] HeadError),
    #[error("HTTP status {status} {reason}")]
    Status { status: u16, reason: String },
    #[error("more than {0} redirects")]
    TooManyRedirects(u8),
    #[error("a redirect ({0}) without a Location")]
    NoLocation(u16),
    #[error("a redirect to a bad location {0:?}: {1}")]
    BadRedirect(String, UrlError),
    #[error("a malformed chunked body")]
    BadChunk,
    #[error("the connection closed after {got} of {expected} bytes")]
    Truncated { got: u64, expected: u64 },
}

/// `GET path` on `host:port` (over TLS without checking the certificate, as Mesos's checks
/// do, when `tls`): the start of the answer, at least its status line. Unbounded in time: the
/// caller applies its timeout. Health and readiness checks use it.
pub(crate) async fn http_head(host: &str, port: u16, path: &str, tls: bool) -> std::io::Result<Vec<u8>> {
    let tls = if tls { Some(unchecked_tls().map_err(std::io::Error::other)?) } else { None };
    let mut stream = connect(host, port, tls).await?;
    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    let host_header = if host.contains(':') { format!("[{host}]:{port}") } else { format!("{host}:{port}") };
    stream.write_all(request(&host_header, &path, "flotilla-check").as_bytes()).await?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    while !answer.windows(2).any(|w| w == b"\r\n") && answer.len() < MAX_STATUS_LINE {
        let read = stream.read(&mut chunk).await?;
        if read == 0 {
            break;
        }
        answer.extend_from_slice(&chunk[..read]);
    }
    Ok(answer)
}

/// The status code of an HTTP answer's status line.
pub(crate) fn status_code(answer: &[u8]) -> Option<u16> {
    let line = answer.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    line.strip_prefix("HTTP/").and_then(|rest| rest.split_whitespace().nth(1)).and_then(|code| code.parse().ok())
}

fn request(host_header: &str, target: &str, user_agent: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host_header}\r\nUser-Agent: {user_agent}\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    )
}

/// A TCP connection to `host:port`, wrapped in TLS when given a client configuration.
async fn connect(host: &str, port: u16, tls: Option<Arc<ClientConfig>>) -> std::io::Result<Box<dyn Io>> {
    let stream = TcpStream::connect((host, port)).await?;
    let Some(config) = tls else { return Ok(Box::new(stream)) };
    // A host that is no DNS name (which rustls would refuse) still gets a handshake; only a
    // verifying configuration then fails it.
    let name = ServerName::try_from(host.to_owned())
        .unwrap_or_else(|_| ServerName::try_from("localhost").expect("a valid name"));
    let stream = tokio_rustls::TlsConnector::from(config).connect(name, stream).await?;
    Ok(Box::new(stream))
}

/// The answer to a GET whose head was 2xx; its body is read with [`Response::read`].
pub(crate) struct Response {
    /// Where the answer came from, after redirects.
    pub url: HttpUrl,
    body: Body,
}

/// `GET url`, following up to `max_redirects` redirects; a final status other than 2xx is an
/// error carrying it. `tls` verifies `https` servers (required for an `https` URL).
pub(crate) async fn get(
    url: &HttpUrl,
    tls: impl Fn() -> Result<Arc<ClientConfig>, String>,
    stall: Duration,
    max_redirects: u8,
) -> Result<Response, HttpError> {
    let mut url = url.clone();
    for _ in 0..=max_redirects {
        let (head, body) = get_once(&url, &tls, stall).await?;
        if head.is_redirect() {
            let location = head.header("location").ok_or(HttpError::NoLocation(head.status))?;
            url = url.redirect(location).map_err(|error| HttpError::BadRedirect(location.to_owned(), error))?;
            continue;
        }
        if !(200..300).contains(&head.status) {
            return Err(HttpError::Status { status: head.status, reason: head.reason });
        }
        return Ok(Response { url, body });
    }
    Err(HttpError::TooManyRedirects(max_redirects))
}

async fn get_once(
    url: &HttpUrl,
    tls: &impl Fn() -> Result<Arc<ClientConfig>, String>,
    stall: Duration,
) -> Result<(ResponseHead, Body), HttpError> {
    let address = format!("{}:{}", url.host, url.port);
    let config = match url.tls {
        true => Some(tls().map_err(|error| HttpError::Tls(address.clone(), error))?),
        false => None,
    };
    let stream =
        bounded(stall, connect(&url.host, url.port, config)).await?.map_err(|error| match (url.tls, error.kind()) {
            (true, std::io::ErrorKind::InvalidData) => HttpError::Tls(address.clone(), error.to_string()),
            _ => HttpError::Connect(address.clone(), error),
        })?;
    let mut conn = Conn { stream, buffer: Vec::new(), start: 0, stall };
    let request = request(&url.host_header(), &url.target, "flotilla-fetcher");
    bounded(stall, conn.stream.write_all(request.as_bytes())).await??;
    let head = conn.read_head().await?;
    let state = match head.body_framing()? {
        BodyFraming::Length(length) => BodyState::Length { remaining: length, expected: length },
        BodyFraming::Chunked => BodyState::Chunk { remaining: 0, first: true },
        BodyFraming::UntilClose => BodyState::UntilClose,
    };
    Ok((head, Body { conn, state, read: 0 }))
}

impl Response {
    /// The body's length when the server announced it.
    pub fn content_length(&self) -> Option<u64> {
        match self.body.state {
            BodyState::Length { expected, .. } => Some(expected),
            _ => None,
        }
    }

    /// The next bytes of the body into `buf`; 0 at its end.
    pub async fn read(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        self.body.read(buf).await
    }
}

async fn bounded<T>(stall: Duration, work: impl Future<Output = T>) -> Result<T, HttpError> {
    tokio::time::timeout(stall, work).await.map_err(|_| HttpError::Stalled(stall))
}

/// A connection with what was read from it and not yet consumed.
struct Conn {
    stream: Box<dyn Io>,
    buffer: Vec<u8>,
    start: usize,
    stall: Duration,
}

impl Conn {
    fn buffered(&self) -> &[u8] {
        &self.buffer[self.start..]
    }

    /// Reads more from the socket into the buffer; 0 at the end of the stream.
    async fn fill(&mut self) -> Result<usize, HttpError> {
        if self.start > 0 {
            self.buffer.drain(..self.start);
            self.start = 0;
        }
        let old = self.buffer.len();
        self.buffer.resize(old + READ_BUFFER, 0);
        let read = bounded(self.stall, self.stream.read(&mut self.buffer[old..])).await;
        let read = match read {
            Ok(Ok(read)) => read,
            Ok(Err(error)) => {
                self.buffer.truncate(old);
                return Err(error.into());
            }
            Err(stalled) => {
                self.buffer.truncate(old);
                return Err(stalled);
            }
        };
        self.buffer.truncate(old + read);
        Ok(read)
    }

    async fn read_head(&mut self) -> Result<ResponseHead, HttpError> {
        loop {
            if let Some(end) = head_end(self.buffered()) {
                let head = ResponseHead::parse(&self.buffered()[..end]);
                self.start += end;
                return Ok(head?);
            }
            if self.buffered().len() > MAX_HEAD_BYTES {
                return Err(HeadError::TooLong.into());
            }
            if self.fill().await? == 0 {
                let partial = String::from_utf8_lossy(self.buffered()).chars().take(80).collect::<String>();
                return Err(if partial.is_empty() { HeadError::Empty } else { HeadError::StatusLine(partial) }.into());
            }
        }
    }

    /// One CRLF-terminated line (without the CRLF), at most [`MAX_CHUNK_LINE`] long.
    async fn read_line(&mut self) -> Result<String, HttpError> {
        loop {
            if let Some(end) = self.buffered().windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buffered()[..end]).into_owned();
                self.start += end + 2;
                return Ok(line);
            }
            if self.buffered().len() > MAX_CHUNK_LINE || self.fill().await? == 0 {
                return Err(HttpError::BadChunk);
            }
        }
    }

    /// Up to `buf.len()` bytes: what is buffered first, then straight from the socket.
    async fn read_some(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        if self.buffered().is_empty() && self.fill().await? == 0 {
            return Ok(0);
        }
        let count = buf.len().min(self.buffered().len());
        buf[..count].copy_from_slice(&self.buffered()[..count]);
        self.start += count;
        Ok(count)
    }
}

#[derive(Clone, Copy, Debug)]
enum BodyState {
    Length {
        remaining: u64,
        expected: u64,
    },
    /// Inside a chunk with `remaining` bytes left (0: a size line comes next).
    Chunk {
        remaining: u64,
        first: bool,
    },
    UntilClose,
    Done,
}

struct Body {
    conn: Conn,
    state: BodyState,
    read: u64,
}

impl Body {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, HttpError> {
        loop {
            match self.state {
                BodyState::Done => return Ok(0),
                BodyState::Length { remaining: 0, .. } => self.state = BodyState::Done,
                BodyState::Length { remaining, expected } => {
                    let count = self.conn.read_some(limit(buf, remaining)).await?;
                    if count == 0 {
                        return Err(HttpError::Truncated { got: self.read, expected });
                    }
                    self.state = BodyState::Length { remaining: remaining - count as u64, expected };
                    return Ok(self.count(count));
                }
                BodyState::UntilClose => {
                    let count = self.conn.read_some(buf).await?;
                    if count == 0 {
                        self.state = BodyState::Done;
                    }
                    return Ok(self.count(count));
                }
                BodyState::Chunk { remaining: 0, first } => self.next_chunk(first).await?,
                BodyState::Chunk { remaining, .. } => {
                    let count = self.conn.read_some(limit(buf, remaining)).await?;
                    if count == 0 {
                        return Err(HttpError::BadChunk);
                    }
                    self.state = BodyState::Chunk { remaining: remaining - count as u64, first: false };
                    return Ok(self.count(count));
                }
            }
        }
    }

    /// Reads the CRLF that ends a chunk's data (after the first), then the next size line;
    /// the last chunk (size 0) is followed by trailers up to a blank line.
    async fn next_chunk(&mut self, first: bool) -> Result<(), HttpError> {
        if !first && !self.conn.read_line().await?.is_empty() {
            return Err(HttpError::BadChunk);
        }
        let size = chunk_size(&self.conn.read_line().await?).ok_or(HttpError::BadChunk)?;
        if size > 0 {
            self.state = BodyState::Chunk { remaining: size, first: false };
            return Ok(());
        }
        while !self.conn.read_line().await?.is_empty() {}
        self.state = BodyState::Done;
        Ok(())
    }

    fn count(&mut self, count: usize) -> usize {
        self.read += count as u64;
        count
    }
}

fn limit(buf: &mut [u8], remaining: u64) -> &mut [u8] {
    let length = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
    &mut buf[..length]
}

/// A client configuration that verifies servers against the PEM CA bundle at `ca_file`.
pub(crate) fn verified_tls(ca_file: &Path) -> Result<Arc<ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let certificates = CertificateDer::pem_file_iter(ca_file)
        .map_err(|error| format!("cannot read the CA certificates in {}: {error}", ca_file.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    // A bundle may hold a certificate rustls cannot use; the others still count.
    let (added, _ignored) = roots.add_parsable_certificates(certificates.filter_map(Result::ok));
    if added == 0 {
        return Err(format!("no usable CA certificate in {}", ca_file.display()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// A client configuration that checks the server's signatures but not who signed its
/// certificate; built once per process.
pub(crate) fn unchecked_tls() -> Result<Arc<ClientConfig>, rustls::Error> {
    unchecked::client_config()
}

mod unchecked {
    use std::sync::{Arc, OnceLock};

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

    #[derive(Debug)]
    struct AnyCertificate(Arc<CryptoProvider>);

    impl ServerCertVerifier for AnyCertificate {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }

    pub fn client_config() -> Result<Arc<ClientConfig>, rustls::Error> {
        static CONFIG: OnceLock<Result<Arc<ClientConfig>, rustls::Error>> = OnceLock::new();
        CONFIG
            .get_or_init(|| {
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let config = ClientConfig::builder_with_provider(Arc::clone(&provider))
                    .with_safe_default_protocol_versions()?
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
                    .with_no_client_auth();
                Ok(Arc::new(config))
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    /// Serves each of `answers` to one connection, in order, and returns the requests read.
    async fn serve(listener: TcpListener, answers: Vec<Vec<u8>>) -> Vec<String> {
        let mut requests = Vec::new();
        for answer in answers {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = Vec::new();
            let mut chunk = [0u8; 1024];
            while head_end(&request).is_none() {
                let read = socket.read(&mut chunk).await.unwrap();
                assert!(read > 0, "the client closed before its request ended");
                request.extend_from_slice(&chunk[..read]);
            }
            requests.push(String::from_utf8_lossy(&request).into_owned());
            socket.write_all(&answer).await.unwrap();
        }
        requests
    }

    async fn body_of(response: &mut Response) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        let mut buf = [0u8; 7];
        loop {
            let count = response.read(&mut buf).await?;
            if count == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&buf[..count]);
        }
    }

    fn no_tls() -> Result<Arc<ClientConfig>, String> {
        Err("no TLS in this test".into())
    }

    const STALL: Duration = Duration::from_secs(10);

    async fn fetch(answers: &[&[u8]]) -> (Result<(Vec<u8>, HttpUrl), HttpError>, Vec<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let answers = answers.iter().map(|a| a.replace_port(port)).collect();
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/start")).unwrap();
        let client = async {
            let mut response = get(&url, no_tls, STALL, 5).await?;
            Ok((body_of(&mut response).await?, response.url.clone()))
        };
        tokio::join!(client, serve(listener, answers))
    }

    trait ReplacePort {
        fn replace_port(&self, port: u16) -> Vec<u8>;
    }

    impl ReplacePort for &[u8] {
        fn replace_port(&self, port: u16) -> Vec<u8> {
            String::from_utf8_lossy(self).replace("PORT", &port.to_string()).into_bytes()
        }
    }

    #[tokio::test]
    async fn bodies_of_every_framing_are_read_whole() {
        let (body, requests) = fetch(&[b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world"]).await;
        assert_eq!(body.unwrap().0, b"hello world");
        assert!(requests[0].starts_with("GET /start HTTP/1.1\r\nHost: 127.0.0.1:"), "{}", requests[0]);
        let chunked =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: 1\r\n\r\n";
        assert_eq!(fetch(&[chunked]).await.0.unwrap().0, b"hello world");
        let to_close = b"HTTP/1.0 200 OK\r\n\r\nuntil the end";
        assert_eq!(fetch(&[to_close]).await.0.unwrap().0, b"until the end");
    }

    #[tokio::test]
    async fn redirects_are_followed_up_to_the_limit() {
        let moved: &[u8] = b"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:PORT/next\r\nContent-Length: 0\r\n\r\n";
        let relative: &[u8] = b"HTTP/1.1 301 Moved\r\nLocation: final\r\nContent-Length: 0\r\n\r\n";
        let ok: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (result, requests) = fetch(&[moved, relative, ok]).await;
        let (body, url) = result.unwrap();
        assert_eq!((body.as_slice(), url.target.as_str()), (&b"ok"[..], "/final"));
        assert!(requests[1].starts_with("GET /next ") && requests[2].starts_with("GET /final "), "{requests:?}");
        let (result, _) = fetch(&[moved; 6]).await;
        assert!(matches!(result, Err(HttpError::TooManyRedirects(5))), "{result:?}");
    }

    #[tokio::test]
    async fn bad_statuses_and_broken_bodies_are_errors() {
        let (result, _) = fetch(&[b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"]).await;
        let error = result.unwrap_err();
        assert_eq!(error.to_string(), "HTTP status 404 Not Found");
        let (result, _) = fetch(&[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"]).await;
        assert!(matches!(result, Err(HttpError::Truncated { got: 5, expected: 10 })), "{result:?}");
        let (result, _) = fetch(&[b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"]).await;
        assert!(matches!(result, Err(HttpError::BadChunk)), "{result:?}");
        let (result, _) = fetch(&[b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n"]).await;
        assert!(matches!(result, Err(HttpError::NoLocation(302))), "{result:?}");
        let (result, _) = fetch(&[b""]).await;
        assert!(matches!(result, Err(HttpError::Head(HeadError::Empty))), "{result:?}");
    }

    #[tokio::test]
    async fn an_https_url_without_a_usable_ca_bundle_fails_clearly() {
        let url = HttpUrl::parse("https://127.0.0.1:1/x").unwrap();
        let missing = Path::new("/nonexistent/ca.pem");
        let result = get(&url, || verified_tls(missing), STALL, 5).await;
        assert!(
            matches!(&result, Err(HttpError::Tls(_, why)) if why.contains("/nonexistent/ca.pem")),
            "{:?}",
            result.err()
        );
    }

    #[test]
    fn the_system_ca_bundle_loads_where_it_exists() {
        let bundle = Path::new("/etc/ssl/certs/ca-certificates.crt");
        if bundle.exists() {
            assert!(verified_tls(bundle).is_ok());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_server_stalls_the_download() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let url = HttpUrl::parse(&format!("http://127.0.0.1:{port}/x")).unwrap();
        // The server accepts and never answers: with paused time the stall timeout fires as
        // soon as everything is idle.
        let server = async {
            let (socket, _) = listener.accept().await.unwrap();
            std::future::pending::<()>().await;
            drop(socket);
        };
        let result = tokio::select! {
            result = get(&url, no_tls, Duration::from_secs(60), 5) => result.map(|_| ()),
            () = server => Ok(()),
        };
        assert!(matches!(result, Err(HttpError::Stalled(_))), "{result:?}");
    }
}
