//! The environment the `cbtl-sandbox` binary prints for a service: `#` comments, then one
//! `KEY=value` per line, ending with [`LAST`]. The binary writes it with [`write()`]; a test
//! or a script that starts the binary reads it with [`read()`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// The last variable printed: once it is read, the environment is complete.
pub const LAST: &str = "CBTL_AUTH__JWT_SECRET";

/// `comment` (each line prefixed with `# `) and then each variable, as `KEY=value` lines,
/// which a shell (`set -a; . ./sandbox.env`), systemd's `EnvironmentFile` and
/// `docker run --env-file` all read. `env` should end with [`LAST`].
pub fn write(comment: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    for line in comment.lines() {
        let _ = writeln!(out, "# {line}");
    }
    for (key, value) in env {
        let _ = writeln!(out, "{key}={value}");
    }
    out
}

/// Reads what [`write()`] wrote, up to and including [`LAST`] (the rest of `reader` is left
/// unread, so a running binary's output can be read while it runs).
pub async fn read(reader: impl AsyncRead + Unpin) -> std::io::Result<BTreeMap<String, String>> {
    let mut lines = BufReader::new(reader).lines();
    let mut env = BTreeMap::new();
    while let Some(line) = lines.next_line().await? {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not KEY=value: {line}"),
            ));
        };
        env.insert(key.to_owned(), value.to_owned());
        if key == LAST {
            return Ok(env);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("the environment ended before {LAST}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_is_written_reads_back_up_to_the_last_variable() {
        let env = vec![
            (
                "CBTL_OKYA__BASE_URL".to_owned(),
                "http://127.0.0.1:8081".to_owned(),
            ),
            (LAST.to_owned(), "k=ey".to_owned()),
        ];
        let text = write("two lines\nof comment", &env) + "after=the end\n";
        assert!(text.starts_with("# two lines\n# of comment\nCBTL_OKYA__BASE_URL="));
        let read = read(text.as_bytes()).await.expect("read");
        assert_eq!(read, env.into_iter().collect());
        let cut = read_error("A=1\n").await;
        assert_eq!(cut, std::io::ErrorKind::UnexpectedEof);
        assert_eq!(
            read_error("nonsense\n").await,
            std::io::ErrorKind::InvalidData
        );
    }

    async fn read_error(text: &str) -> std::io::ErrorKind {
        read(text.as_bytes()).await.expect_err("refused").kind()
    }
}
