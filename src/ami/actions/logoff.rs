use super::{Action, ActionError, ActionWriter};

/// Ends the session; Asterisk answers `Response: Goodbye` and closes the socket.
#[derive(Debug, Clone, Default)]
pub struct Logoff;

impl Action for Logoff {
    fn name(&self) -> &str {
        "Logoff"
    }
    fn write_fields(&self, _w: &mut ActionWriter) -> Result<(), ActionError> {
        Ok(())
    }
}
