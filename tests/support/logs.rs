//! Log lines of one test, captured into memory so a test can assert on them.
#![allow(dead_code)]

use std::io::Write;
use std::sync::{Arc, Mutex};

/// Captures what this thread logs (DEBUG and up, no colours) until dropped. The subscriber
/// is thread-local (`tracing::subscriber::set_default`), so the test must run on a
/// current-thread runtime (plain `#[tokio::test]`), where its spawned tasks run too.
pub struct Logs {
    buf: Arc<Mutex<Vec<u8>>>,
    _guard: tracing::subscriber::DefaultGuard,
}

#[derive(Clone)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut g) = self.0.lock() {
            g.extend_from_slice(b);
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    pub fn capture() -> Logs {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = Sink(buf.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        let guard = tracing::subscriber::set_default(subscriber);
        Logs { buf, _guard: guard }
    }

    /// Everything logged so far.
    pub fn text(&self) -> String {
        let g = self.buf.lock().expect("log buffer");
        String::from_utf8_lossy(&g).into_owned()
    }

    /// The lines logged at WARN or above so far.
    pub fn warnings(&self) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .map(str::to_owned)
            .collect()
    }
}
