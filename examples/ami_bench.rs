//! AMI benchmarks: `cargo run --release --example ami_bench [-- EVENTS CALLS [all]]`.
//!
//! 1. Codec + typed-event throughput on one core, on a stream built from the captures.
//! 2. CALLS concurrent originate-and-track sequences through one connection against the
//!    simulated PBX, run in a child process so the memory figures are the client's alone.
//!
//! Figures are printed, never asserted.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use dialout::ami::AmiConfig;
use dialout::ami::actions::EventsMask;
use dialout::ami::bench;
use dialout::pbx_sim::{PbxSim, SimConfig};

fn transcripts() -> PathBuf {
    std::env::var_os("DIALOUT_AMI_TRANSCRIPTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../shared/ami-transcripts"
            ))
        })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("sim") {
        // Child mode: run the simulator until stdin closes.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return rt.block_on(async {
            let sim = PbxSim::start("127.0.0.1:0".parse()?, SimConfig::default()).await?;
            println!("{}", sim.local_addr().port());
            tokio::task::spawn_blocking(|| {
                let mut s = String::new();
                let _ = std::io::stdin().read_line(&mut s);
            })
            .await?;
            sim.shutdown().await;
            Ok(())
        });
    }
    let events: u64 = args
        .get(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let calls: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(10_000);
    println!(
        "machine: {} cores (shared with other work)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    // Warm-up, then the measured run.
    bench::parse_throughput(&transcripts(), 100_000)?;
    println!("{}", bench::parse_throughput(&transcripts(), events)?);

    let mut child = Command::new(std::env::current_exe()?)
        .arg("sim")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let port: u16 = line.trim().parse()?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cfg = AmiConfig {
        port,
        username: "dialer".into(),
        secret: "dialer-secret".into(),
        // Ask Asterisk for call events only, unless told `all` (every class, as read=all).
        events: if args.get(3).map(String::as_str) == Some("all") {
            EventsMask::On
        } else {
            EventsMask::Classes(vec!["call".into()])
        },
        action_timeout: Duration::from_secs(60),
        ..AmiConfig::default()
    };
    // Calls stay up 20 s after answer, so all of them are live at once.
    let report = rt.block_on(bench::originate_and_track(
        cfg,
        calls,
        "Local/answer_20000@callee",
    ))?;
    println!("{report}");
    drop(child.stdin.take());
    let _ = child.wait();
    Ok(())
}
