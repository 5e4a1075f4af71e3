use super::{Action, ActionError, ActionWriter};

/// Lists live channels as an event list (`CoreShowChannel` … `CoreShowChannelsComplete`);
/// what a dialer uses to reconcile after a reconnect.
#[derive(Debug, Clone, Default)]
pub struct CoreShowChannels;

impl Action for CoreShowChannels {
    fn name(&self) -> &str {
        "CoreShowChannels"
    }
    fn write_fields(&self, _w: &mut ActionWriter) -> Result<(), ActionError> {
        Ok(())
    }
    fn is_list(&self) -> bool {
        true
    }
}
