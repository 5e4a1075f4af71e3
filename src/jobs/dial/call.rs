//! One call as its events describe it: a state machine with no I/O, fed the call's
//! AMI events in whatever order they arrive (a Hangup may come before the
//! OriginateResponse), so it can be tested on the captures' orders directly.

use chrono::{DateTime, Utc};

use crate::ami::Message;
use crate::ami::event::{Event, Uniqueid};
use crate::cdr::Disposition;

/// What an event changed, for the attempt to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Nothing,
    /// OriginateResponse Success: the callee answered.
    Answered,
    /// OriginateResponse Failure: the call will not be answered.
    Failed,
    /// The originated channel hung up after the answer: the call is over.
    Ended,
}

/// A channel leg of the call.
#[derive(Debug, Clone, Default)]
pub struct Leg {
    pub channel: Option<String>,
    pub cause: Option<u32>,
    pub cause_txt: Option<String>,
    pub hung_up: bool,
}

#[derive(Debug, Clone)]
pub struct Call {
    /// Our ChannelId: the originated leg's Uniqueid (and Linkedid).
    pub uniqueid: String,
    pub started: DateTime<Utc>,
    pub answered: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
    /// OriginateResponse: success and Reason.
    pub response: Option<(bool, Option<u32>)>,
    /// The originated leg (`;1` of a Local channel) and the far leg (`;2`).
    pub leg1: Leg,
    pub leg2: Leg,
}

impl Call {
    pub fn new(uniqueid: String, started: DateTime<Utc>) -> Self {
        Self {
            uniqueid,
            started,
            answered: None,
            ended: None,
            response: None,
            leg1: Leg::default(),
            leg2: Leg::default(),
        }
    }

    fn leg(&mut self, uid: Uniqueid<'_>) -> Option<&mut Leg> {
        let uid = uid.known()?;
        if uid == self.uniqueid {
            Some(&mut self.leg1)
        } else if uid
            .strip_prefix(self.uniqueid.as_str())
            .is_some_and(|rest| rest.starts_with(';') || rest.starts_with('-'))
        {
            Some(&mut self.leg2)
        } else {
            None
        }
    }

    /// Applies one of this call's events received at `now`.
    pub fn apply(&mut self, m: &Message, now: DateTime<Utc>) -> Step {
        match Event::parse(m) {
            Some(Event::OriginateResponse(r)) => {
                if self.response.is_some() {
                    return Step::Nothing;
                }
                let success = r.is_success();
                self.response = Some((success, r.reason));
                if success {
                    if let Some(c) = r.channel {
                        self.leg1.channel.get_or_insert_with(|| c.to_owned());
                    }
                    self.answered = Some(now);
                    // A Hangup of the originated leg before the answer was reported
                    // cannot happen in the captures; if it did, the call is over.
                    if self.leg1.hung_up {
                        self.ended.get_or_insert(now);
                        return Step::Ended;
                    }
                    Step::Answered
                } else {
                    Step::Failed
                }
            }
            Some(Event::Newstate(_) | Event::Unknown(_)) => {
                // Newchannel, Newstate: the legs' channel names, for a Hangup action.
                if let (Some(uid), Some(c)) = (m.get("Uniqueid"), m.get("Channel"))
                    && let Some(leg) = self.leg(Uniqueid::Known(uid))
                {
                    leg.channel.get_or_insert_with(|| c.to_owned());
                }
                Step::Nothing
            }
            Some(Event::Hangup(h)) => {
                let Some(leg) = self.leg(h.uniqueid) else {
                    return Step::Nothing;
                };
                leg.hung_up = true;
                leg.cause = h.cause;
                leg.cause_txt = h.cause_txt.map(str::to_owned);
                if let Some(c) = h.channel {
                    leg.channel.get_or_insert_with(|| c.to_owned());
                }
                let originated_leg = h.uniqueid.known() == Some(self.uniqueid.as_str());
                if originated_leg && self.answered.is_some() && self.ended.is_none() {
                    self.ended = Some(now);
                    return Step::Ended;
                }
                Step::Nothing
            }
            _ => Step::Nothing,
        }
    }

    /// The cause to report: the far leg's when it gave a real one (the originated leg
    /// of a failed Local call says 0), else the originated leg's.
    pub fn cause(&self) -> (Option<u32>, Option<String>) {
        match (&self.leg2, &self.leg1) {
            (far, _) if far.cause.is_some_and(|c| c != 0) => (far.cause, far.cause_txt.clone()),
            (_, near) if near.cause.is_some() => (near.cause, near.cause_txt.clone()),
            (far, _) => (far.cause, far.cause_txt.clone()),
        }
    }

    /// Whether any leg has hung up (a failed call's cause is known).
    pub fn any_hangup(&self) -> bool {
        self.leg1.hung_up || self.leg2.hung_up
    }

    /// Over, as far as the events tell: answered and the originated leg hung up, or
    /// not answered, its OriginateResponse in and the far leg (which carries the real
    /// cause) hung up. A failed originate with no far leg (no channel at all, or a
    /// trunk channel) sends no such Hangup: the attempt's settle time covers it.
    pub fn is_over(&self) -> bool {
        match (self.answered, self.response) {
            (Some(_), _) => self.leg1.hung_up,
            (None, Some(_)) => self.leg2.hung_up,
            (None, None) => false,
        }
    }

    /// The call's disposition, as Asterisk's CDR for the originated leg says it.
    pub fn disposition(&self) -> Disposition {
        if self.answered.is_some() {
            return Disposition::Answered;
        }
        match (self.response.and_then(|r| r.1), self.cause().0) {
            (Some(5), _) | (_, Some(17)) => Disposition::Busy,
            (Some(8), _) | (_, Some(34)) => Disposition::Congestion,
            (Some(3), _) | (_, Some(19 | 21)) => Disposition::NoAnswer,
            _ => Disposition::Failed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(fields: &[(&str, &str)]) -> Message {
        Message::from_pairs(fields.iter().copied())
    }

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::<Utc>::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn hangup(uid: &str, cause: &str, txt: &str) -> Message {
        msg(&[
            ("Event", "Hangup"),
            ("Channel", "Local/busy@callee-00000001;2"),
            ("Uniqueid", uid),
            ("Cause", cause),
            ("Cause-txt", txt),
        ])
    }

    fn response(ok: bool, reason: &str, uid: &str) -> Message {
        msg(&[
            ("Event", "OriginateResponse"),
            ("Response", if ok { "Success" } else { "Failure" }),
            ("Channel", "Local/x@callee-00000001;1"),
            ("Reason", reason),
            ("Uniqueid", uid),
        ])
    }

    #[test]
    fn a_hangup_before_the_originate_response_is_kept_not_dropped() {
        let mut c = Call::new("dialout-1-a".into(), t(0));
        assert_eq!(
            c.apply(&hangup("dialout-1-a;2", "17", "User busy"), t(5)),
            Step::Nothing
        );
        assert_eq!(
            c.apply(&hangup("dialout-1-a", "0", "Unknown"), t(6)),
            Step::Nothing
        );
        assert_eq!(
            c.apply(&response(false, "5", "dialout-1-a"), t(7)),
            Step::Failed
        );
        assert_eq!(c.disposition(), Disposition::Busy);
        assert_eq!(c.cause(), (Some(17), Some("User busy".into())));
    }

    #[test]
    fn an_answered_call_ends_with_the_originated_legs_hangup() {
        let mut c = Call::new("dialout-2-b".into(), t(0));
        assert_eq!(
            c.apply(&response(true, "4", "dialout-2-b"), t(100)),
            Step::Answered
        );
        assert_eq!(
            c.apply(&hangup("dialout-2-b;2", "16", "Normal Clearing"), t(1900)),
            Step::Nothing
        );
        assert_eq!(
            c.apply(&hangup("dialout-2-b", "16", "Normal Clearing"), t(1901)),
            Step::Ended
        );
        assert_eq!(c.disposition(), Disposition::Answered);
        assert_eq!(c.ended, Some(t(1901)));
    }

    #[test]
    fn other_calls_events_change_nothing() {
        let mut c = Call::new("dialout-3-c".into(), t(0));
        assert_eq!(
            c.apply(&hangup("dialout-3-cX", "17", "User busy"), t(1)),
            Step::Nothing
        );
        assert_eq!(
            c.apply(&hangup("1795745645.3", "17", "User busy"), t(1)),
            Step::Nothing
        );
        assert!(!c.any_hangup());
    }

    #[test]
    fn dispositions_follow_reason_and_cause_as_in_the_captures() {
        let cases = [
            ("8", "34", Disposition::Congestion),
            ("3", "19", Disposition::NoAnswer),
            ("0", "21", Disposition::NoAnswer),
            ("0", "0", Disposition::Failed),
        ];
        for (reason, cause, want) in cases {
            let mut c = Call::new("u".into(), t(0));
            c.apply(&hangup("u;2", cause, "x"), t(1));
            c.apply(&response(false, reason, "u"), t(2));
            assert_eq!(c.disposition(), want, "reason {reason} cause {cause}");
        }
    }
}
