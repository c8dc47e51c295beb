//! The chaos soak's short version (the long one: `cargo run --release --bin soak`, see the
//! README): customers, faults on every upstream and webhook, `kill -9` of the service,
//! and then the invariants table, which must show no violation.

use crate::sandbox_binary::sandbox_binary;
use std::process::Stdio;
use tokio::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_chaos_soak_ends_with_zero_violations() {
    let work_dir = std::env::temp_dir().join(format!("cbtl-soak-test-{}", uuid::Uuid::new_v4()));
    let output = Command::new(env!("CARGO_BIN_EXE_soak"))
        .args(["--customers", "30", "--minutes", "1.5", "--kills", "5"])
        .args(["--settle-secs", "240", "--work-dir"])
        .arg(&work_dir)
        .arg("--service-bin")
        .arg(env!("CARGO_BIN_EXE_cbtl-bff"))
        .arg("--sandbox-bin")
        .arg(sandbox_binary())
        .env_remove("CARGO")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output()
        .await
        .expect("the soak runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the soak found violations or could not run ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // The table was printed, every row checked something, and instances were killed.
    for row in [
        "| captured − refunded is 0 or the total; 0 unless live or completed |",
        "| no order charged twice |",
        "| each voucher redeemed at most once, released when its order failed |",
        "| each accepted order in the POS exactly once, or recalled with its money returned |",
        "| each account linked to exactly one SessionM user |",
        "| no webhook event applied twice (histories only move forward) |",
        "| points credited exactly once per accepted order |",
        "| no flow left unfinished; no order needing attention without a reason |",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(row))
            .unwrap_or_else(|| panic!("no row {row}:\n{stdout}"));
        let checked: usize = line
            .trim_end_matches(" |")
            .rsplit(" | ")
            .nth(1)
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!(checked > 0, "nothing checked: {line}");
    }
    // Each kill is printed as it happens (`soak: …`), and again in the summary.
    let kills = stdout
        .lines()
        .filter(|l| l.starts_with("soak: ") && l.contains("killed with SIGKILL"))
        .count();
    assert_eq!(kills, 5, "{stdout}");
    let _ = std::fs::remove_dir_all(&work_dir);
}
