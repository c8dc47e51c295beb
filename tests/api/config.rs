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
        // tower's TpsBudget would panic on these: refused at the start instead.
        (
            "CBTL_RETRY_BUDGET__WINDOW_SECS",
            "0",
            "retry_budget.window_secs",
        ),
        ("CBTL_RETRY_BUDGET__RATIO", "11", "retry_budget.ratio"),
        ("CBTL_BREAKER__FAILURE_RATIO", "0", "breaker.failure_ratio"),
        ("CBTL_OKYA__TIMEOUT_MS", "soon", "TIMEOUT_MS"),
        ("CBTL_STRIPE__BASE_URL", "not a url", "stripe.base_url"),
        ("DATABASE_URL", "mysql://localhost/x", "DATABASE_URL"),
        ("CBTL_LISTEN_ADDR", "nowhere", "LISTEN_ADDR"),
        ("CBTL_NO_SUCH_SETTING", "1", "no_such_setting"),
        // A semaphore of no slots would make every call wait out its timeout.
        (
            "CBTL_SESSIONM__MAX_CONCURRENT_CALLS",
            "0",
            "sessionm.max_concurrent_calls",
        ),
        ("CBTL_JOBS__WORKERS", "0", "jobs.workers"),
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

/// An upstream made real by its URL setting, and the settings whose sandbox values that
/// refuses besides `auth.jwt_secret`.
struct RealUpstream {
    url_env: &'static str,
    url_setting: &'static str,
    credentials: &'static [Credential],
    /// Other settings this upstream needs when real (not credentials).
    also: &'static [(&'static str, &'static str)],
}

/// A credential setting and a real-looking value for it.
struct Credential {
    env: &'static str,
    setting: &'static str,
    real: &'static str,
}

const OKYA_API_KEY: Credential = Credential {
    env: "CBTL_OKYA__API_KEY",
    setting: "okya.api_key",
    real: "okya_live_key",
};

const REAL_UPSTREAMS: &[RealUpstream] = &[
    RealUpstream {
        url_env: "CBTL_OKYA__BASE_URL",
        url_setting: "okya.base_url",
        credentials: &[
            OKYA_API_KEY,
            Credential {
                env: "CBTL_WEBHOOKS__OKYA_SECRETS",
                setting: "webhooks.okya_secrets",
                real: "[whsec_okya_live]",
            },
        ],
        also: &[],
    },
    RealUpstream {
        url_env: "CBTL_OKYA__AUTH_BASE_URL",
        url_setting: "okya.auth_base_url",
        credentials: &[OKYA_API_KEY],
        also: &[],
    },
    RealUpstream {
        url_env: "CBTL_STRIPE__BASE_URL",
        url_setting: "stripe.base_url",
        credentials: &[
            Credential {
                env: "CBTL_STRIPE__SECRET_KEY",
                setting: "stripe.secret_key",
                real: "sk_test_real",
            },
            Credential {
                env: "CBTL_WEBHOOKS__STRIPE_SECRETS",
                setting: "webhooks.stripe_secrets",
                real: "[whsec_real]",
            },
        ],
        also: &[],
    },
    RealUpstream {
        url_env: "CBTL_EPOINT__BASE_URL",
        url_setting: "epoint.base_url",
        credentials: &[Credential {
            env: "CBTL_EPOINT__API_KEY",
            setting: "epoint.api_key",
            real: "epoint_live_key",
        }],
        also: &[],
    },
    RealUpstream {
        url_env: "CBTL_SESSIONM__CORE_URL",
        url_setting: "sessionm.core_url",
        credentials: &[
            Credential {
                env: "CBTL_SESSIONM__API_KEY",
                setting: "sessionm.api_key",
                real: "sm_live_key",
            },
            Credential {
                env: "CBTL_SESSIONM__API_SECRET",
                setting: "sessionm.api_secret",
                real: "sm_live_secret",
            },
            Credential {
                env: "CBTL_SESSIONM__POS_API_KEY",
                setting: "sessionm.pos_api_key",
                real: "sm_live_pos_key",
            },
            Credential {
                env: "CBTL_SESSIONM__POS_API_SECRET",
                setting: "sessionm.pos_api_secret",
                real: "sm_live_pos_secret",
            },
        ],
        also: &[
            ("CBTL_SESSIONM__POS_URL", "https://pos.upstream.example"),
            ("CBTL_SESSIONM__ECOMMERCE_STORE_ID", "sm-ecommerce"),
            ("CBTL_SESSIONM__CLIENT_ID", "sm-client-1"),
        ],
    },
];

const A_PRIVATE_JWT_KEY: &str = "a-private-signing-key-of-at-least-32-bytes";

/// The credential settings `stderr` names, sorted.
fn settings_in(stderr: &str) -> Vec<&'static str> {
    let mut all = vec!["auth.jwt_secret"];
    for upstream in REAL_UPSTREAMS {
        all.extend(upstream.credentials.iter().map(|c| c.setting));
    }
    all.sort_unstable();
    all.dedup();
    all.retain(|setting| stderr.contains(&format!("`{setting}`")));
    all
}

#[test]
fn sandbox_credentials_with_a_real_upstream_stop_the_start_naming_each() {
    for RealUpstream {
        url_env,
        url_setting,
        credentials,
        also,
    } in REAL_UPSTREAMS
    {
        let output = binary()
            .env(url_env, "https://upstream.example")
            .envs(also.iter().copied())
            .arg("serve")
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url_env}: {stderr}");
        let mut expected: Vec<&str> = credentials.iter().map(|c| c.setting).collect();
        expected.push("auth.jwt_secret");
        expected.sort_unstable();
        expected.dedup();
        assert_eq!(settings_in(&stderr), expected, "{url_env}: {stderr}");
        assert!(
            stderr.contains(&format!("`{url_setting}` is set")),
            "{url_env}: {stderr}"
        );
        for Credential { env, .. } in *credentials {
            assert!(stderr.contains(env), "{env} named in {stderr}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn the_development_jwt_key_is_refused_with_any_real_upstream() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    for RealUpstream {
        url_env,
        url_setting,
        credentials,
        also,
    } in REAL_UPSTREAMS
    {
        let real = |command: &mut Command| {
            command.envs(also.iter().copied());
            command.env(url_env, "https://upstream.example").env(
                "DATABASE_URL",
                format!("sqlite://{}/cbtl.db?mode=rwc", dir.path().display()),
            );
            for Credential { env, real, .. } in *credentials {
                command.env(env, real);
            }
        };
        let mut with_dev_key = binary();
        real(&mut with_dev_key);
        let output = with_dev_key.arg("migrate").output().expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url_env}: {stderr}");
        assert_eq!(settings_in(&stderr), ["auth.jwt_secret"], "{stderr}");
        assert!(
            stderr.contains(&format!("`{url_setting}` is set")),
            "{stderr}"
        );

        // With a private key as well, the same settings are accepted.
        let mut with_private_key = binary();
        real(&mut with_private_key);
        let output = with_private_key
            .env("CBTL_AUTH__JWT_SECRET", A_PRIVATE_JWT_KEY)
            .arg("migrate")
            .output()
            .expect("runs");
        assert!(
            output.status.success(),
            "{url_env}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn a_real_stripe_url_needs_a_stripe_shaped_key() {
    let output = binary()
        .env("CBTL_STRIPE__BASE_URL", "https://api.stripe.com")
        .env("CBTL_STRIPE__SECRET_KEY", "not-a-stripe-key")
        .env("CBTL_WEBHOOKS__STRIPE_SECRETS", "[whsec_real]")
        .env("CBTL_AUTH__JWT_SECRET", A_PRIVATE_JWT_KEY)
        .arg("serve")
        .output()
        .expect("runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("`stripe.secret_key`"), "{stderr}");
    assert!(stderr.contains("sk_test_"), "{stderr}");
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
