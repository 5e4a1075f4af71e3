//! The link drops: in-flight actions fail cleanly and are never re-sent; subscribers hear of
//! the gap; the client reconnects with backoff and logs in again.

mod support;

use std::time::Duration;

use dialout::ami::actions::Ping;
use dialout::ami::{AmiClient, AmiError, Notice, Originate};
use dialout::pbx_sim::PbxSim;
use support::ami::{WAIT, client_config, fast_sim_config, start_sim};
use support::logs::Logs;
use tokio::time::timeout;

async fn next_link_notice(sub: &mut dialout::ami::Subscription) -> Notice {
    loop {
        let n = timeout(WAIT, sub.recv())
            .await
            .expect("notice in time")
            .expect("open");
        if !matches!(n, Notice::Event(_)) {
            return n;
        }
    }
}

#[tokio::test]
async fn restart_on_same_port_fails_in_flight_and_reconnects() {
    let sim = start_sim(fast_sim_config()).await;
    let addr = sim.local_addr();
    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    let mut sub = c.subscribe(|_| true);

    // An action in flight: a synchronous Originate to a callee that rings for 60 s (600 ms
    // scaled) has no response until then.
    let mut o = Originate::to_exten("Local/noanswer@callee", "originated", "s", 1);
    o.async_ = false;
    o.timeout = Some(Duration::from_secs(60));
    o.caller_id = Some("\"JOB1\" <1>".into());
    let c2 = c.clone();
    let inflight = tokio::spawn(async move { c2.originate(&o).await });
    // Wait until the PBX has the call (its Newchannel reached us), so the action is in flight.
    loop {
        if let Notice::Event(m) = timeout(WAIT, sub.recv()).await.unwrap().unwrap()
            && m.event_name() == Some("Newchannel")
        {
            break;
        }
    }
    assert_eq!(c.in_flight(), 1);
    sim.shutdown().await;

    let r = timeout(WAIT, inflight).await.unwrap().unwrap();
    assert!(matches!(r, Err(AmiError::ConnectionLost)), "{r:?}");
    assert!(matches!(
        next_link_notice(&mut sub).await,
        Notice::Disconnected { .. }
    ));
    // While down, actions fail at once rather than queueing for a later link.
    let r = c.send_action(&Ping).await;
    assert!(
        matches!(r, Err(AmiError::NotConnected | AmiError::ConnectionLost)),
        "{r:?}"
    );

    let sim2 = PbxSim::start(addr, fast_sim_config()).await.unwrap();
    assert!(matches!(
        next_link_notice(&mut sub).await,
        Notice::Reconnected
    ));
    assert!(c.is_connected());
    assert_eq!(c.reconnects(), 1);
    timeout(WAIT, c.send_action(&Ping)).await.unwrap().unwrap();
    // Never re-sent: the new PBX has seen no Originate.
    assert_eq!(sim2.live_calls(), 0);
    c.shutdown().await;
    sim2.shutdown().await;
}

#[tokio::test]
async fn connection_dropped_mid_call_is_reported() {
    let sim = start_sim(fast_sim_config()).await;
    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    let mut sub = c.subscribe(|m| m.event_name() == Some("OriginateResponse"));
    let mut o = Originate::to_exten("Local/drop_200@callee", "originated", "s", 1);
    o.caller_id = Some("\"JOB2\" <2>".into());
    c.originate(&o).await.unwrap();
    // The call is answered, then the PBX drops us (2 ms scaled), then we come back.
    assert!(matches!(
        next_link_notice(&mut sub).await,
        Notice::Disconnected { .. }
    ));
    assert!(matches!(
        next_link_notice(&mut sub).await,
        Notice::Reconnected
    ));
    timeout(WAIT, c.send_action(&Ping)).await.unwrap().unwrap();
    // Reconcile: the call is still live on the PBX.
    let list = c
        .send_list(&dialout::ami::actions::CoreShowChannels)
        .await
        .unwrap();
    assert!(
        list.events
            .iter()
            .any(|m| m.get("CallerIDNum") == Some("2"))
    );
    c.shutdown().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn pbx_drops_everyone_client_comes_back_each_time() {
    let sim = start_sim(fast_sim_config()).await;
    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    let mut sub = c.subscribe(|_| false);
    for round in 1..=3 {
        sim.drop_connections();
        assert!(matches!(
            next_link_notice(&mut sub).await,
            Notice::Disconnected { .. }
        ));
        assert!(matches!(
            next_link_notice(&mut sub).await,
            Notice::Reconnected
        ));
        assert_eq!(c.reconnects(), round);
        timeout(WAIT, c.send_action(&Ping)).await.unwrap().unwrap();
    }
    c.shutdown().await;
    // After shutdown nothing reconnects.
    assert!(!c.is_connected());
    assert!(matches!(
        c.send_action(&Ping).await,
        Err(AmiError::Shutdown)
    ));
    sim.shutdown().await;
}

#[tokio::test]
async fn clean_pbx_shutdown_sends_shutdown_event_then_closes() {
    let sim = start_sim(fast_sim_config()).await;
    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    let mut sub = c.subscribe(|m| m.event_name() == Some("Shutdown"));
    sim.shutdown_gracefully().await;
    match timeout(WAIT, sub.recv()).await.unwrap().unwrap() {
        Notice::Event(m) => match dialout::ami::Event::parse(&m) {
            Some(dialout::ami::Event::Shutdown(s)) => {
                assert_eq!((s.shutdown, s.restart), (Some("Cleanly"), false))
            }
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        next_link_notice(&mut sub).await,
        Notice::Disconnected { .. }
    ));
    c.shutdown().await;
}

#[tokio::test]
async fn shutdown_while_reconnecting_is_prompt() {
    let sim = start_sim(fast_sim_config()).await;
    let mut cfg = client_config(&sim);
    cfg.reconnect_backoff_min = Duration::from_millis(5);
    cfg.reconnect_backoff_max = Duration::from_millis(20);
    let c = AmiClient::connect(cfg).await.unwrap();
    let mut sub = c.subscribe(|_| false);
    sim.shutdown().await; // nothing listens any more: every reconnect attempt fails
    assert!(matches!(
        next_link_notice(&mut sub).await,
        Notice::Disconnected { .. }
    ));
    timeout(WAIT, c.shutdown())
        .await
        .expect("shutdown does not wait for a reconnect");
    assert!(matches!(
        c.send_action(&Ping).await,
        Err(AmiError::Shutdown)
    ));
}

/// Asterisk closes the socket after the Goodbye to our Logoff: a close we asked for, not a
/// warning. A close nobody asked for still is one.
#[tokio::test]
async fn a_normal_shutdown_logs_no_warning_an_unexpected_close_does() {
    let logs = Logs::capture();
    let sim = start_sim(fast_sim_config()).await;
    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    timeout(WAIT, c.send_action(&Ping)).await.unwrap().unwrap();
    c.shutdown().await;
    assert!(logs.warnings().is_empty(), "{:#?}", logs.warnings());

    let c = AmiClient::connect(client_config(&sim)).await.unwrap();
    let mut sub = c.subscribe(|_| false);
    sim.drop_connections();
    assert!(matches!(
        next_link_notice(&mut sub).await,
        Notice::Disconnected { .. }
    ));
    assert!(
        logs.warnings()
            .iter()
            .any(|l| l.contains("AMI peer closed the connection")),
        "{:#?}",
        logs.warnings()
    );
    c.shutdown().await;
    sim.shutdown().await;
}
