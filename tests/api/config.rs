//! The binary's command line and settings: bad settings stop the start with a message
//! naming the setting; `print-schema` is the checked-in SDL; `migrate` applies migrations.

use std::process::Command;

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cbtl-bff"));
    // Only what each test sets: the developer's own CBTL_ variables must not leak in.
    for (key, _) in std::env::vars() {
        if key.starts_with("CBTL_") || key == "DATABASE_URL" {
            command.env_remove(key);
        }
    }
    command
}

#[test]
fn the_checked_in_schema_matches_the_code() {
    let checked_in =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
            .expect("schema.graphql at the project root");
    assert!(
        checked_in == cbtl_bff::graphql::sdl(),
        "schema.graphql is stale: run `cargo run -- print-schema > schema.graphql`"
    );
    let printed = binary().arg("print-schema").output().expect("runs");
    assert!(printed.status.success());
    assert_eq!(String::from_utf8_lossy(&printed.stdout), checked_in);
}

#[test]
fn bad_settings_stop_the_start_naming_the_setting() {
    let cases: &[(&str, &str, &str)] = &[
        ("CBTL_SANDBOX__ERROR_RATE", "2.5", "sandbox.error_rate"),
        ("CBTL_OKYA__TIMEOUT_MS", "soon", "TIMEOUT_MS"),
        ("CBTL_STRIPE__BASE_URL", "not a url", "stripe.base_url"),
        ("DATABASE_URL", "mysql://localhost/x", "DATABASE_URL"),
        ("CBTL_LISTEN_ADDR", "nowhere", "LISTEN_ADDR"),
        ("CBTL_NO_SUCH_SETTING", "1", "no_such_setting"),
    ];
    for (key, value, named) in cases {
        let output = binary()
            .env(key, value)
            .arg("serve")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{key}: {stderr}");
        assert!(
            stderr.contains(named),
            "{key}={value} should name {named}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let output = binary()
        .args(["--config", "/nonexistent/cbtl.toml", "serve"])
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--config"));
}

#[test]
fn a_real_stripe_url_needs_a_real_key() {
    let output = binary()
        .env("CBTL_STRIPE__BASE_URL", "https://api.stripe.com")
        .arg("serve")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("stripe.secret_key"));
}

#[test]
fn settings_come_from_a_toml_file_then_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cbtl.toml");
    std::fs::write(&file, "[sandbox]\nerror_rate = 3.0\n").unwrap();
    let output = binary()
        .args(["--config"])
        .arg(&file)
        .arg("serve")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("sandbox.error_rate"));
    // The environment overrides the file.
    std::fs::write(
        &file,
        format!(
            "database_url = \"sqlite://{}/a.db?mode=rwc\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    let output = binary()
        .arg("--config")
        .arg(&file)
        .env(
            "DATABASE_URL",
            format!("sqlite://{}/b.db?mode=rwc", dir.path().display()),
        )
        .arg("migrate")
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(dir.path().join("b.db").exists());
    assert!(!dir.path().join("a.db").exists());
}
