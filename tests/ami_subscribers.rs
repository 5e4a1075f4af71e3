//! Fan-out: per-subscriber filters; a slow subscriber never stalls the reader.

mod support;

use std::time::Duration;

use dialout::ami::actions::Ping;
use dialout::ami::{AmiClient, Message, Notice, Originate, Subscription};
use support::ami::{WAIT, client_config, fast_sim_config, start_sim};
use tokio::time::timeout;

#[tokio::test]
async fn slow_subscriber_does_not_stall_others_and_drops_are_counted() {
    let sim = start_sim(fast_sim_config()).await;
    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    // Never read until the end: room for 5 events only.
    let mut slow = c.subscribe_with_capacity(|_| true, 5);
    let mut fast = c.subscribe(|m| m.event_name() == Some("Hangup"));
    let mut cdr_only = c.subscribe(|m| m.event_name() == Some("Cdr"));
    const CALLS: u32 = 40;
    for j in 0..CALLS {
        let mut o = Originate::to_exten("Local/answer_5@callee", "originated", "s", 1);
        o.caller_id = Some(format!("\"JOB{j}\" <{j}>"));
        c.originate(&o).await.unwrap();
    }
    let mut hangups = 0;
    while hangups < 2 * CALLS {
        match timeout(WAIT, fast.recv()).await.unwrap().unwrap() {
            Notice::Event(m) => {
                assert_eq!(m.event_name(), Some("Hangup"));
                hangups += 1;
            }
            other => panic!("fast subscriber should see only events: {other:?}"),
        }
    }
    let mut cdrs = 0;
    while cdrs < 2 * CALLS {
        if let Notice::Event(m) = timeout(WAIT, cdr_only.recv()).await.unwrap().unwrap() {
            assert_eq!(m.event_name(), Some("Cdr"));
            cdrs += 1;
        }
    }
    // The reader kept going: actions still answered promptly.
    timeout(Duration::from_secs(2), c.send_action(&Ping))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fast.dropped(), 0);
    let dropped = slow.dropped();
    assert!(dropped > 100, "slow subscriber dropped {dropped}");
    // It reads what was kept, then learns of the gap where it was.
    for _ in 0..5 {
        assert!(matches!(slow.try_recv(), Some(Notice::Event(_))));
    }
    assert_eq!(slow.dropped(), dropped, "nothing dropped since");
    match slow.try_recv() {
        Some(Notice::Lagged(n)) => assert_eq!(n, dropped),
        other => panic!("expected Lagged, got {other:?}"),
    }
    assert!(slow.try_recv().is_none());
    c.shutdown().await;
    sim.shutdown().await;
}

/// `Lagged(n)` stands where the events were lost: after the events queued before the
/// first dropped one, before those queued after the burst.
#[tokio::test]
async fn lagged_comes_where_the_events_were_lost() {
    let sim = start_sim(fast_sim_config()).await;
    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    let hangup = |m: &Message| m.event_name() == Some("Hangup");
    let mut slow = c.subscribe_with_capacity(hangup, 3);
    let mut all = c.subscribe(hangup);
    // 10 busy calls, 20 Hangups: the slow subscriber has room for the first 3.
    for j in 0..10u32 {
        c.originate(&busy(j)).await.unwrap();
    }
    let order = hangups(&mut all, 20).await;
    for want in &order[..3] {
        match slow.try_recv() {
            Some(Notice::Event(m)) => assert_eq!(&uniqueid(&m), want),
            other => panic!("expected the kept Hangup {want}, got {other:?}"),
        }
    }
    match slow.try_recv() {
        Some(Notice::Lagged(n)) => assert_eq!(n, 17),
        other => panic!("expected Lagged(17), got {other:?}"),
    }
    assert!(slow.try_recv().is_none());
    // After the gap, with room again: the next call's Hangups come after the Lagged.
    c.originate(&busy(100)).await.unwrap();
    let later = hangups(&mut all, 2).await;
    for want in &later {
        match slow.try_recv() {
            Some(Notice::Event(m)) => assert_eq!(&uniqueid(&m), want),
            other => panic!("expected the new Hangup {want}, got {other:?}"),
        }
    }
    assert_eq!(slow.dropped(), 17);
    c.shutdown().await;
    sim.shutdown().await;
}

fn busy(job: u32) -> Originate {
    let mut o = Originate::to_exten("Local/busy@callee", "originated", "s", 1);
    o.caller_id = Some(format!("\"JOB{job}\" <{job}>"));
    o
}

fn uniqueid(m: &Message) -> String {
    m.get("Uniqueid").unwrap_or_default().to_owned()
}

/// The Uniqueids of the next `n` Hangups on `sub`, in order.
async fn hangups(sub: &mut Subscription, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    while out.len() < n {
        match timeout(WAIT, sub.recv()).await.unwrap().unwrap() {
            Notice::Event(m) => out.push(uniqueid(&m)),
            other => panic!("{other:?}"),
        }
    }
    out
}

#[tokio::test]
async fn dropped_subscription_is_pruned() {
    let sim = start_sim(fast_sim_config()).await;
    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    let gone = c.subscribe(|_| true);
    drop(gone);
    let mut live = c.subscribe(|m| m.event_name() == Some("OriginateResponse"));
    let mut o = Originate::to_exten("Local/busy@callee", "originated", "s", 1);
    o.caller_id = Some("\"J\" <5>".into());
    c.originate(&o).await.unwrap();
    let n = timeout(WAIT, live.recv()).await.unwrap().unwrap();
    assert!(matches!(n, Notice::Event(m) if m.get("Reason") == Some("5")));
    c.shutdown().await;
    sim.shutdown().await;
}
