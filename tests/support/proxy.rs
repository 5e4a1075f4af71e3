//! A TCP proxy between a worker and PostgreSQL that can lose one reply on purpose: the
//! database has done the work (and committed), the worker never hears of it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use sqlx::postgres::PgConnectOptions;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixStream};

/// Where the proxy forwards to: PostgreSQL's TCP port or its Unix socket (the private
/// cluster has no TCP listener).
#[derive(Debug, Clone)]
pub enum Upstream {
    Tcp(String),
    Unix(PathBuf),
}

impl Upstream {
    /// The server `options` connect to.
    pub fn of(options: &PgConnectOptions) -> Self {
        match options.get_socket() {
            Some(dir) => Self::Unix(dir.join(format!(".s.PGSQL.{}", options.get_port()))),
            None => Self::Tcp(format!("{}:{}", options.get_host(), options.get_port())),
        }
    }
}

#[derive(Default)]
struct Shared {
    /// Armed: the next server reply holding these bytes is dropped with its connection.
    cut_marker: Mutex<Option<Vec<u8>>>,
    cuts: AtomicUsize,
}

pub struct CutProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl CutProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`.
    pub async fn start(upstream: Upstream) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let for_task = shared.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                match &upstream {
                    Upstream::Tcp(addr) => {
                        if let Ok(server) = TcpStream::connect(addr).await {
                            tokio::spawn(pump_pair(client, server, for_task.clone()));
                        }
                    }
                    Upstream::Unix(path) => {
                        if let Ok(server) = UnixStream::connect(path).await {
                            tokio::spawn(pump_pair(client, server, for_task.clone()));
                        }
                    }
                }
            }
        });
        Self {
            addr,
            shared,
            accept,
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// `url` (with its user, password and database) pointed at the proxy over TCP.
    pub fn options_for(&self, url: &str) -> PgConnectOptions {
        let mut url = url::Url::parse(url).expect("a database URL");
        let query: Vec<(String, String)> = url
            .query_pairs()
            .filter(|(k, _)| k != "host" && k != "port")
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        url.set_query(None);
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url.set_host(Some("127.0.0.1")).expect("host");
        url.set_port(Some(self.port())).expect("port");
        url.as_str().parse().expect("the proxy's URL")
    }

    /// The next reply from the database that contains `marker` never reaches the
    /// client: the proxy closes that connection instead of forwarding it.
    pub fn cut_reply_containing(&self, marker: &[u8]) {
        *self.shared.cut_marker.lock().expect("lock") = Some(marker.to_vec());
    }

    /// How many replies were cut so far.
    pub fn cuts(&self) -> usize {
        self.shared.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn pump_pair<S>(client: TcpStream, server: S, shared: Arc<Shared>)
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = tokio::io::split(server);
    let upstream = async {
        let _ = tokio::io::copy(&mut client_read, &mut server_write).await;
    };
    let downstream = async {
        let mut buf = vec![0u8; 64 * 1024];
        // The end of the previous chunk, so a marker split across reads is still seen.
        let mut tail: Vec<u8> = Vec::new();
        loop {
            let n = match server_read.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let chunk = &buf[..n];
            {
                let mut armed = shared.cut_marker.lock().expect("lock");
                if let Some(marker) = armed.as_ref() {
                    let mut seen = tail.clone();
                    seen.extend_from_slice(chunk);
                    if seen.windows(marker.len()).any(|w| w == marker.as_slice()) {
                        *armed = None;
                        shared.cuts.fetch_add(1, Ordering::SeqCst);
                        return; // both halves drop: the connection is gone
                    }
                    let keep = marker.len().saturating_sub(1).min(seen.len());
                    tail = seen[seen.len() - keep..].to_vec();
                }
            }
            if client_write.write_all(chunk).await.is_err() {
                return;
            }
        }
    };
    // Whichever direction ends first ends the pair.
    tokio::select! {
        _ = upstream => {}
        _ = downstream => {}
    }
}
