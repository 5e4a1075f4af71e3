//! One bounded GET, for `dialout healthcheck` (the runtime image has no curl) and
//! tests.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::HOST;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// The most of a reply body kept (a `/metrics` page is some kilobytes).
const MAX_BODY: usize = 4 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum GetError {
    #[error("{0:?} is not an http:// URL with a host")]
    BadUrl(String),
    #[error("no answer within {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("reading the reply: {0}")]
    Body(String),
}

/// A reply: its status code and its body as text.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

/// GETs `url` (`http://host:port/path`), the whole exchange bounded by `within`.
///
/// # Errors
/// A URL that is not `http://` with a host, no connection, an HTTP error, a body over
/// 4 MiB, or no reply in time.
pub async fn get(url: &str, within: Duration) -> Result<Reply, GetError> {
    let bad = || GetError::BadUrl(url.to_owned());
    let uri: Uri = url.parse().map_err(|_| bad())?;
    if uri.scheme_str() != Some("http") {
        return Err(bad());
    }
    let authority = uri.authority().ok_or_else(bad)?.as_str().to_owned();
    let host = uri.host().ok_or_else(bad)?;
    // An IPv6 literal comes in brackets.
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_owned();
    let exchange = async move {
        let stream = TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| GetError::Connect(authority.clone(), e))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        // Ends once `sender` is dropped (or the peer closes).
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(HOST, authority.as_str())
            .body(Empty::<Bytes>::new())
            .map_err(|_| GetError::BadUrl(authority.clone()))?;
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = Limited::new(response.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| GetError::Body(e.to_string()))?
            .to_bytes();
        Ok(Reply {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(within, exchange)
        .await
        .map_err(|_| GetError::Timeout(within))?
}
