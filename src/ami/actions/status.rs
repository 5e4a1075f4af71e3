use super::{Action, ActionError, ActionWriter};

/// Channel status as an event list (`Status` … `StatusComplete`); one channel or all.
#[derive(Debug, Clone, Default)]
pub struct Status {
    pub channel: Option<String>,
}

impl Action for Status {
    fn name(&self) -> &str {
        "Status"
    }
    fn write_fields(&self, w: &mut ActionWriter) -> Result<(), ActionError> {
        w.opt("Channel", self.channel.as_deref())?;
        Ok(())
    }
    fn is_list(&self) -> bool {
        true
    }
}
