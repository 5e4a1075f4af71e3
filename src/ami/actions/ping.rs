use super::{Action, ActionError, ActionWriter};

/// Keepalive; Asterisk answers `Ping: Pong` and a `Timestamp:`.
#[derive(Debug, Clone, Default)]
pub struct Ping;

impl Action for Ping {
    fn name(&self) -> &str {
        "Ping"
    }
    fn write_fields(&self, _w: &mut ActionWriter) -> Result<(), ActionError> {
        Ok(())
    }
}
