use super::{Action, ActionError, ActionWriter};

/// Any other action, by name and fields. Checked like the others.
#[derive(Debug, Clone, Default)]
pub struct GenericAction {
    pub name: String,
    pub fields: Vec<(String, String)>,
    /// Set when the answer is an event list.
    pub list: bool,
}

impl Action for GenericAction {
    fn name(&self) -> &str {
        &self.name
    }
    fn write_fields(&self, w: &mut ActionWriter) -> Result<(), ActionError> {
        for (k, v) in &self.fields {
            w.field(k, v)?;
        }
        Ok(())
    }
    fn is_list(&self) -> bool {
        self.list
    }
}
