//! A minimal HTTP/1.1 client for loopback load: one keep-alive connection, one request
//! at a time, the request written as prepared bytes and the response read into a reused
//! buffer. It understands exactly what the servers under test send: a status line,
//! headers, and a body framed by `Content-Length` or `chunked`. Far cheaper per request
//! than a general client, so that on a two-core machine the load generator takes as
//! little CPU from the server as it can.

use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One response; `body` and the headers borrow the connection's buffer.
pub struct Response<'a> {
    pub status: u16,
    head: &'a [u8],
    pub body: &'a [u8],
}

impl Response<'_> {
    /// The first header of that name (ASCII case-insensitive), as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        header_in(self.head, name)
    }

    pub fn body_text(&self) -> &str {
        std::str::from_utf8(self.body).unwrap_or("<binary>")
    }
}

fn header_in<'a>(head: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(head).ok()?;
    text.split("\r\n").skip(1).find_map(|line| {
        let (k, v) = line.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    /// Where the previous response's bytes end in `buf` (none are pipelined, so
    /// anything after it is the start of nothing and is dropped).
    consumed: usize,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            stream: None,
            buf: Vec::with_capacity(16 * 1024),
            consumed: 0,
        }
    }

    async fn stream(&mut self) -> io::Result<&mut TcpStream> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr).await?;
            s.set_nodelay(true)?;
            self.stream = Some(s);
        }
        self.stream
            .as_mut()
            .ok_or_else(|| io::Error::other("no connection"))
    }

    /// Sends `request` (a complete HTTP/1.1 request) and reads the response. On an I/O
    /// error the connection is dropped, and the next call reconnects.
    pub async fn send(&mut self, request: &[u8]) -> io::Result<Response<'_>> {
        match self.exchange(request).await {
            Ok((status, head_end, body_start, body_end, close)) => {
                if close {
                    self.stream = None;
                }
                let head = &self.buf[..head_end];
                let body = &self.buf[body_start..body_end];
                Ok(Response { status, head, body })
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    /// Returns (status, end of head, body start, body end, server closes).
    async fn exchange(&mut self, request: &[u8]) -> io::Result<(u16, usize, usize, usize, bool)> {
        self.buf.clear();
        self.consumed = 0;
        let stream = self.stream().await?;
        stream.write_all(request).await?;
        // Head.
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill().await?;
        };
        let head = &self.buf[..head_end];
        let status = parse_status(head)?;
        let close = header_in(head, "connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let chunked = header_in(head, "transfer-encoding")
            .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
        let length = header_in(head, "content-length")
            .map(|v| v.parse::<usize>())
            .transpose()
            .map_err(|_| io::Error::other("bad Content-Length"))?;
        if chunked {
            let end = self.read_chunked(head_end).await?;
            return Ok((status, head_end, head_end, end, close));
        }
        let length = match length {
            Some(n) => n,
            None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
            None => return Err(io::Error::other("response without Content-Length")),
        };
        while self.buf.len() < head_end + length {
            self.fill().await?;
        }
        self.consumed = head_end + length;
        Ok((status, head_end, head_end, head_end + length, close))
    }

    /// De-chunks the body in place after `start`; returns where it ends.
    async fn read_chunked(&mut self, start: usize) -> io::Result<usize> {
        let mut read = start; // next unread byte of the chunked encoding
        let mut write = start; // end of the de-chunked body
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf[read..], b"\r\n") {
                    break read + i;
                }
                self.fill().await?;
            };
            let size_text = std::str::from_utf8(&self.buf[read..line_end])
                .map_err(|_| io::Error::other("bad chunk size"))?;
            let size_text = size_text.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| io::Error::other("bad chunk size"))?;
            let data = line_end + 2;
            while self.buf.len() < data + size + 2 {
                self.fill().await?;
            }
            if size == 0 {
                // Trailers are not used by the servers under test.
                self.consumed = data + 2;
                return Ok(write);
            }
            self.buf.copy_within(data..data + size, write);
            write += size;
            read = data + size + 2;
        }
    }

    async fn fill(&mut self) -> io::Result<()> {
        let stream = self
            .stream
            .as_mut()
            .ok_or_else(|| io::Error::other("no connection"))?;
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(16 * 1024);
        }
        let n = stream.read_buf(&mut self.buf).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "server closed the connection",
            ));
        }
        Ok(())
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_status(head: &[u8]) -> io::Result<u16> {
    // "HTTP/1.1 200 OK"
    head.get(9..12)
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::other("bad status line"))
}

/// Percent-encodes a form or query value (RFC 3986 unreserved characters pass).
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes a percent-encoded query value (`+` is a space).
pub fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 3;
                    }
                    Err(_) => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of query parameter `name` in a URL.
pub fn query_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == name).then(|| decode(v))
    })
}

/// The string value of a top-level JSON member, found without parsing the whole
/// document (the values the workloads read are base64url and never escaped).
pub fn json_string<'a>(body: &'a [u8], name: &str) -> Option<&'a str> {
    let text = std::str::from_utf8(body).ok()?;
    let key = format!("\"{name}\"");
    let at = text.find(&key)? + key.len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    let rest = rest.strip_prefix('"')?;
    let end = rest.find('"')?;
    Some(&rest[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_json() {
        assert_eq!(
            query_param(
                "https://app.example/cb?code=a-b_c&state=s&iss=http%3A%2F%2Fx",
                "iss"
            )
            .as_deref(),
            Some("http://x")
        );
        assert_eq!(
            query_param("https://app.example/cb?code=a-b_c&state=s", "code").as_deref(),
            Some("a-b_c")
        );
        let body = br#"{"access_token":"eyJ.x.y","token_type":"Bearer","refresh_token": "g.2.s"}"#;
        assert_eq!(json_string(body, "refresh_token"), Some("g.2.s"));
        assert_eq!(json_string(body, "access_token"), Some("eyJ.x.y"));
        assert_eq!(json_string(body, "id_token"), None);
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
    }
}
