//! Fan-out: per-subscriber filters; a slow subscriber never stalls the reader.

mod support;

use std::time::Duration;

use dialout::ami::actions::Ping;
use dialout::ami::{AmiClient, Notice, Originate};
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
    // It learns of the gap first, then reads what was kept.
    match slow.try_recv() {
        Some(Notice::Lagged(n)) => assert_eq!(n, dropped),
        other => panic!("expected Lagged, got {other:?}"),
    }
    let mut kept = 0;
    while let Some(Notice::Event(_)) = slow.try_recv() {
        kept += 1;
    }
    assert_eq!(kept, 5);
    c.shutdown().await;
    sim.shutdown().await;
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
