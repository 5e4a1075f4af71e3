use super::{Action, ActionError, ActionWriter};

/// `Operation:` of `Action: Filter`; only `Add` exists in Asterisk 22.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FilterOperation {
    #[default]
    Add,
}

/// `Action: Filter` — ask Asterisk to send this session only matching events.
///
/// Use the advanced form (`match_criteria` set), e.g. `action(include),header(CallerIDNum),
/// method(exact)` with `filter` = the tag. Note from filter-action.txt: Newchannel carries
/// `CallerIDNum: <unknown>`, so a CallerIDNum filter drops it.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub operation: FilterOperation,
    /// Advanced criteria (Asterisk 20.7+/21+); `None` for a legacy regex filter.
    pub match_criteria: Option<String>,
    pub filter: String,
}

impl Filter {
    /// Include only events whose `header` equals `value` exactly.
    pub fn header_exact(header: &str, value: &str) -> Self {
        Self {
            operation: FilterOperation::Add,
            match_criteria: Some(format!("action(include),header({header}),method(exact)")),
            filter: value.to_owned(),
        }
    }

    /// Include only events named `event`.
    pub fn event_name(event: &str) -> Self {
        Self {
            operation: FilterOperation::Add,
            match_criteria: Some(format!("action(include),name({event})")),
            filter: String::new(),
        }
    }
}

impl Filter {
    /// Whether this filter includes (rather than excludes) what it matches. Once a session
    /// has one include, Asterisk sends it only events some include matches.
    pub fn is_include(&self) -> bool {
        match &self.match_criteria {
            Some(mc) => !mc.replace(' ', "").contains("action(exclude)"),
            None => !self.filter.starts_with('!'),
        }
    }
}

impl Action for Filter {
    fn name(&self) -> &str {
        "Filter"
    }
    fn write_fields(&self, w: &mut ActionWriter) -> Result<(), ActionError> {
        w.field(
            "Operation",
            match self.operation {
                FilterOperation::Add => "Add",
            },
        )?;
        w.opt("MatchCriteria", self.match_criteria.as_deref())?;
        w.field("Filter", &self.filter)?;
        Ok(())
    }
}
