//! Call detail records: one row in `dialout_cdr` per originate sent, written in the
//! same transaction as the dial job's final status (a [`CompletionHook`]), so a CDR
//! never exists without its final status nor the reverse.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::queue::CompletionHook;

/// Asterisk's CDR dispositions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Answered,
    NoAnswer,
    Busy,
    Congestion,
    Failed,
}

impl Disposition {
    pub fn as_str(self) -> &'static str {
        match self {
            Disposition::Answered => "ANSWERED",
            Disposition::NoAnswer => "NO ANSWER",
            Disposition::Busy => "BUSY",
            Disposition::Congestion => "CONGESTION",
            Disposition::Failed => "FAILED",
        }
    }
}

/// One call's record, as the `dialout_cdr` columns name it.
#[derive(Debug, Clone)]
pub struct CdrRecord {
    pub calldate: DateTime<Utc>,
    pub answer: Option<DateTime<Utc>>,
    pub end: DateTime<Utc>,
    pub clid: String,
    pub src: String,
    pub dst: String,
    pub dcontext: String,
    pub channel: String,
    pub dstchannel: String,
    pub lastapp: String,
    pub lastdata: String,
    pub disposition: Disposition,
    pub accountcode: String,
    pub uniqueid: String,
    pub linkedid: String,
    pub job_id: i64,
    pub attempt: i32,
    pub hangup_cause: Option<i32>,
    pub hangup_cause_txt: Option<String>,
    pub originate_reason: Option<i32>,
    pub worker_id: String,
}

/// Whole seconds from `from` to `to`, truncated, as Asterisk counts duration and billsec.
pub fn whole_seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> i32 {
    let ms = (to - from).num_milliseconds().max(0);
    i32::try_from(ms / 1000).unwrap_or(i32::MAX)
}

impl CdrRecord {
    pub fn duration(&self) -> i32 {
        whole_seconds(self.calldate, self.end)
    }

    pub fn billsec(&self) -> i32 {
        self.answer.map_or(0, |a| whole_seconds(a, self.end))
    }

    /// Writes the row; a second write of the same call (`uniqueid`) is a no-op.
    pub async fn insert(&self, conn: &mut PgConnection) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO dialout_cdr (calldate, answer, \"end\", clid, src, dst, dcontext, channel, \
                 dstchannel, lastapp, lastdata, duration, billsec, disposition, accountcode, \
                 uniqueid, linkedid, job_id, attempt, hangup_cause, hangup_cause_txt, \
                 originate_reason, worker_id) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, \
                     $18, $19, $20, $21, $22, $23) \
             ON CONFLICT (uniqueid) DO NOTHING",
        )
        .bind(self.calldate)
        .bind(self.answer)
        .bind(self.end)
        .bind(&self.clid)
        .bind(&self.src)
        .bind(&self.dst)
        .bind(&self.dcontext)
        .bind(&self.channel)
        .bind(&self.dstchannel)
        .bind(&self.lastapp)
        .bind(&self.lastdata)
        .bind(self.duration())
        .bind(self.billsec())
        .bind(self.disposition.as_str())
        .bind(&self.accountcode)
        .bind(&self.uniqueid)
        .bind(&self.linkedid)
        .bind(self.job_id)
        .bind(self.attempt)
        .bind(self.hangup_cause)
        .bind(&self.hangup_cause_txt)
        .bind(self.originate_reason)
        .bind(&self.worker_id)
        .execute(conn)
        .await?;
        Ok(())
    }

    /// The records (a job's calls of this attempt, usually one) as SQL to commit with
    /// the job's final status.
    pub fn hook(records: Vec<CdrRecord>) -> CompletionHook {
        let records = Arc::new(records);
        Arc::new(move |conn| {
            let records = records.clone();
            Box::pin(async move {
                for r in records.iter() {
                    r.insert(&mut *conn).await?;
                }
                Ok(())
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_truncated_like_asterisk() {
        let t0 = DateTime::<Utc>::from_timestamp_millis(1_000_000).unwrap();
        let at = |ms: i64| DateTime::<Utc>::from_timestamp_millis(1_000_000 + ms).unwrap();
        assert_eq!(whole_seconds(t0, at(999)), 0);
        assert_eq!(whole_seconds(t0, at(1_999)), 1);
        assert_eq!(whole_seconds(t0, at(-5)), 0);
    }
}
