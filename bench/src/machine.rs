//! The machine a run was on: CPU model, cores, kernel, rustc, git commit.

use serde::Serialize;
use std::process::Command;

/// What the table's machine line names.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    /// `/proc/loadavg`'s 1, 5 and 15 minute load when the run began: how busy the
    /// machine was besides the benchmark.
    pub load: String,
    pub kernel: String,
    pub rustc: String,
    /// `git describe`-like: the commit, `-dirty` with uncommitted changes.
    pub commit: String,
}

impl Machine {
    /// Reads `/proc/cpuinfo`, `uname -r`, `rustc --version` and `git`; "unknown" where
    /// one cannot be read.
    pub fn detect() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpu_model(&cpuinfo).unwrap_or_else(|| "unknown CPU".to_owned());
        // The machine's, not this process's (which may already be pinned to one core).
        let cores = match cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count()
        {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let load = std::fs::read_to_string("/proc/loadavg")
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "unknown".to_owned());
        let kernel = output("uname", &["-r"]);
        let rustc = output(
            &std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned()),
            &["--version"],
        );
        let mut commit = output("git", &["rev-parse", "--short=12", "HEAD"]);
        if !output("git", &["status", "--porcelain", "--untracked-files=no"]).is_empty()
            && commit != "unknown"
        {
            commit.push_str("-dirty");
        }
        Self {
            cpu,
            cores,
            load,
            kernel,
            rustc,
            commit,
        }
    }

    /// One line for the report.
    pub fn line(&self) -> String {
        format!(
            "{}, {} cores, Linux {}, {}, commit {}; load average at start {}",
            self.cpu, self.cores, self.kernel, self.rustc, self.commit, self.load
        )
    }
}

/// The first `model name` in `/proc/cpuinfo`'s text.
pub fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
}

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cpu_model_is_read() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\nflags\t: fpu\n";
        assert_eq!(super::cpu_model(text).as_deref(), Some("AMD EPYC 7B13"));
        assert_eq!(super::cpu_model("processor : 0\n"), None);
    }
}
