//! The job kinds. Each kind is a [`JobHandler`](crate::worker::JobHandler) registered
//! under the name applications put in `dialout_queue.kind`.

pub mod noop;

use crate::worker::Registry;

/// Every kind this build can run. Which ones a replica leases is `worker.kinds`.
pub fn registry() -> Registry {
    Registry::new().with("noop", noop::Noop)
}
