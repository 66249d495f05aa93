//! A small blocking HTTP client for the tests, on reqwest's blocking client.
//!
//! What the tests need from it, and what reqwest's defaults would change:
//! * redirects are *not* followed: a blob answer of an object store is a 307 that tests
//!   look at;
//! * repeated headers go out as separate lines (reqwest appends), as skopeo sends its six
//!   `Accept` lines;
//! * a [`Response`] keeps the status, every header in order (each value of a repeated one)
//!   and the whole body (none for HEAD).
//!
//! reqwest's blocking client must not block a thread of an async runtime; called from one
//! (an emulator started in a `#[tokio::test]`), the request runs on a thread of its own.

use std::fmt::Write as _;
use std::sync::LazyLock;
use std::time::Duration;

use reqwest::blocking::Client;
use reqwest::{Method, redirect};

/// Time limit of a request through [`get`] or `Server::request` (a manifest request may
/// make the server build the image with Nix).
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// A response as the tests read it.
#[derive(Debug, Clone)]
pub struct Response {
    /// Method and URL of the request, e.g. `GET http://127.0.0.1:PORT/v2/`, for messages.
    pub request: String,
    pub status: u16,
    /// In the order the server sent them, except that the values of a repeated header come
    /// together, each as an entry of its own.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Header `name`, or a panic that shows the whole response.
    pub fn expect_header(&self, name: &str) -> &str {
        self.header(name).unwrap_or_else(|| panic!("response has no {name} header\n{}", self.describe()))
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON, or a panic that shows the response.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("response body is not JSON ({e})\n{}", self.describe()))
    }

    /// Request, status, headers and (the start of) the body, for messages.
    pub fn describe(&self) -> String {
        let mut s = format!("{} -> {}\n", self.request, self.status);
        for (k, v) in &self.headers {
            let _ = writeln!(s, "{k}: {v}");
        }
        let body = self.text();
        let shown: String = body.chars().take(2000).collect();
        let _ = write!(s, "\n{shown}");
        if body.len() > shown.len() {
            let _ = write!(s, "\n[... {} bytes in all]", self.body.len());
        }
        s
    }
}

static CLIENT: LazyLock<Client> = LazyLock::new(|| {
    Client::builder()
        .redirect(redirect::Policy::none())
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client without TLS settings builds")
});

/// Sends `method url` with `headers` (a name may repeat) and reads the whole response
/// within `timeout`. `Err` says which request failed and why (the whole error chain).
pub fn send(method: &str, url: &str, headers: &[(&str, &str)], timeout: Duration) -> Result<Response, String> {
    let request = format!("{method} {url}");
    let exchange = || {
        let method = Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut builder = CLIENT.request(method.clone(), url).timeout(timeout);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let resp = builder.send().map_err(chain)?;
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
            .collect();
        let body = if method == Method::HEAD { Vec::new() } else { resp.bytes().map_err(chain)?.to_vec() };
        Ok(Response { request: request.clone(), status, headers, body })
    };
    let result = if tokio::runtime::Handle::try_current().is_ok() {
        std::thread::scope(|s| s.spawn(exchange).join().unwrap_or_else(|panic| std::panic::resume_unwind(panic)))
    } else {
        exchange()
    };
    result.map_err(|e: String| format!("{request}: {e}"))
}

/// `GET url`; panics if no HTTP response comes back.
pub fn get(url: &str) -> Response {
    send("GET", url, &[], TIMEOUT).unwrap_or_else(|e| panic!("{e}"))
}

/// Sends the bytes of a whole HTTP/1.1 request to `addr` (`host:port`) as they are, and
/// reads the answer until the server closes the connection (so the request should say
/// `Connection: close`), at most [`TIMEOUT`]. For what a client library would not send:
/// bytes that are not UTF-8 in the request target, a GET with a body, a body announced and
/// never sent. The body is as it came (not de-chunked). `Err` if nothing parseable came back.
pub fn raw(addr: &str, request: &[u8]) -> Result<Response, String> {
    raw_with_status_line(addr, request).map(|(_, response)| response)
}

/// `method path` at `addr` (`host:port`) as its status line (`HTTP/1.1 422 <reason
/// phrase>`: the one thing a client that reads no body shows) and the response.
pub fn status_line(addr: &str, method: &str, path: &str) -> Result<(String, Response), String> {
    status_line_with(addr, method, path, &[])
}

/// [`status_line`] with request `headers` (a name may repeat).
pub fn status_line_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(String, Response), String> {
    let headers: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    raw_with_status_line(addr, request.as_bytes())
}

fn raw_with_status_line(addr: &str, request: &[u8]) -> Result<(String, Response), String> {
    use std::io::{Read, Write};
    let shown = String::from_utf8_lossy(request.split(|&b| b == b'\r').next().unwrap_or_default()).into_owned();
    let fail = |e: &dyn std::fmt::Display| format!("{shown} (raw, to {addr}): {e}");
    let mut conn = std::net::TcpStream::connect(addr).map_err(|e| fail(&e))?;
    conn.set_read_timeout(Some(TIMEOUT)).map_err(|e| fail(&e))?;
    conn.write_all(request).map_err(|e| fail(&e))?;
    let mut answer = Vec::new();
    conn.read_to_end(&mut answer).map_err(|e| fail(&e))?;
    let split = answer.windows(4).position(|w| w == b"\r\n\r\n").ok_or_else(|| fail(&"no complete head"))?;
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| fail(&status_line))?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let response = Response { request: shown, status, headers, body: answer[split + 4..].to_vec() };
    Ok((status_line.to_owned(), response))
}

/// An error with its sources: reqwest's own message hides the cause ("error sending request").
fn chain(e: reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(cause) = source {
        let _ = write!(s, ": {cause}");
        source = cause.source();
    }
    s
}

/// The API test of merged `Accept` lines means something only if they reach the server as
/// separate lines, the way skopeo sends them.
#[test]
fn repeated_headers_are_sent_as_separate_lines() {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        let mut lines = Vec::new();
        let mut reader = BufReader::new(&conn);
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line.trim().is_empty() {
                break;
            }
            lines.push(line.trim().to_owned());
        }
        (&conn).write_all(b"HTTP/1.1 200 OK\r\nX-Twice: 1\r\nContent-Length: 2\r\nX-Twice: 2\r\n\r\nok").unwrap();
        lines
    });
    let r = send("GET", &url, &[("Accept", "a/b"), ("Accept", "c/d")], Duration::from_secs(10)).unwrap();
    let lines = server.join().unwrap();
    let accept: Vec<String> =
        lines.iter().map(|l| l.to_ascii_lowercase()).filter(|l| l.starts_with("accept:")).collect();
    assert_eq!(accept, ["accept: a/b", "accept: c/d"], "{lines:?}");
    assert_eq!((r.status, r.body.as_slice()), (200, b"ok".as_slice()));
    let twice: Vec<&str> = r.headers.iter().filter(|(k, _)| k == "x-twice").map(|(_, v)| v.as_str()).collect();
    assert_eq!(twice, ["1", "2"], "{}", r.describe());
}
