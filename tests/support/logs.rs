//! Log lines of one test, captured into memory so a test can assert on them.
#![allow(dead_code)]

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};

thread_local! {
    /// Where this thread's log lines go while a [`Logs`] lives on it.
    static CAPTURE: RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { RefCell::new(None) };
}

/// Captures what this thread logs (DEBUG and up, no colours) until dropped. A test using it
/// must run on a current-thread runtime (plain `#[tokio::test]`), where its spawned tasks
/// run too.
///
/// One global subscriber writes into the buffer of the thread that logs (other threads'
/// lines are dropped). A thread-local subscriber (`tracing::subscriber::set_default`) is
/// not enough when tests run in parallel: while it is the only one registered, a callsite
/// first reached on another test's thread caches "disabled" for everyone, and lines go
/// missing.
pub struct Logs {
    buf: Arc<Mutex<Vec<u8>>>,
}

struct ThreadSink;

impl Write for ThreadSink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(buf) = c.borrow().as_ref()
                && let Ok(mut g) = buf.lock()
            {
                g.extend_from_slice(b);
            }
        });
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// # Panics
    /// If another global subscriber was installed first (nothing could be captured).
    pub fn capture() -> Logs {
        static INIT: Once = Once::new();
        INIT.call_once(|| {
            tracing_subscriber::fmt()
                .with_writer(|| ThreadSink)
                .with_ansi(false)
                .with_max_level(tracing::Level::DEBUG)
                .try_init()
                .expect("no other global subscriber in a test binary that captures logs");
        });
        let buf = Arc::new(Mutex::new(Vec::new()));
        CAPTURE.with(|c| *c.borrow_mut() = Some(buf.clone()));
        Logs { buf }
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

impl Drop for Logs {
    fn drop(&mut self) {
        CAPTURE.with(|c| c.borrow_mut().take());
    }
}
