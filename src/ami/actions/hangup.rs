use super::{Action, ActionError, ActionWriter};

/// Hangs up a channel; Asterisk answers `Message: Channel Hungup`.
#[derive(Debug, Clone)]
pub struct Hangup {
    pub channel: String,
    /// Q.850 cause; Asterisk uses 16 when absent (the captures send none and see 0/Unknown).
    pub cause: Option<u32>,
}

impl Action for Hangup {
    fn name(&self) -> &str {
        "Hangup"
    }
    fn write_fields(&self, w: &mut ActionWriter) -> Result<(), ActionError> {
        w.field("Channel", &self.channel)?;
        if let Some(c) = self.cause {
            w.field("Cause", &c.to_string())?;
        }
        Ok(())
    }
}
