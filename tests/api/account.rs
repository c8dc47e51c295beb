//! Create Account, sign-in by one-time code, sessions, and the durable SessionM link.

use crate::helpers::{
    Db, REGISTER, Sim, TestApp, TestDb, error_code, error_codes, okya_simulator, spawn_app_with,
    spawn_with_settings, test_settings,
};
use crate::routes::{CREATE_ACCOUNT, CREATE_MEMBER, SEND_OTP, VERIFY_OTP};
use cbtl_sandbox::faults::Faults;
use serde_json::{Value, json};

const SIGN_IN: &str = "mutation($i: SignInInput!) { signIn(input: $i) { customer { id } accessToken refreshToken userErrors { code field message } } }";
const REQUEST_OTP: &str = "mutation($i: SignInRequestOtpInput!) { signInRequestOtp(input: $i) { userErrors { code field message } } }";
const RESEND: &str = "mutation($i: AccountResendOtpInput!) { accountResendOtp(input: $i) { userErrors { code field message } } }";
const REFRESH: &str = "mutation($i: TokenRefreshInput!) { tokenRefresh(input: $i) { accessToken refreshToken userErrors { code } } }";
const SIGN_OUT: &str = "mutation { signOut { userErrors { code } } }";
const ME: &str = "{ me { id email confirmed loyalty { pointsBalance tier } } }";

/// The `accountRegister` payload for Ada Lovelace with this phone and email.
async fn register(app: &TestApp, phone: &str, email: &str) -> Value {
    app.register(phone, email).await["data"]["accountRegister"].clone()
}

/// The `accountConfirm` payload of `phone` with `code`.
async fn confirm(app: &TestApp, phone: &str, code: &str) -> Value {
    app.confirm(phone, code).await["data"]["accountConfirm"].clone()
}

/// The whole response to `signInRequestOtp` for `phone`.
async fn request_otp(app: &TestApp, phone: &str) -> Value {
    app.gql_as(None, REQUEST_OTP, json!({"i": {"phone": phone}}))
        .await
}

/// The whole response to `signIn` with `phone` and `code`.
async fn sign_in(app: &TestApp, phone: &str, code: &str) -> Value {
    app.gql_as(None, SIGN_IN, json!({"i": {"phone": phone, "code": code}}))
        .await
}

/// The whole response to `tokenRefresh` with `refresh_token`.
async fn refresh(app: &TestApp, refresh_token: &str) -> Value {
    app.gql_as(None, REFRESH, json!({"i": {"refreshToken": refresh_token}}))
        .await
}

/// The whole response to `me`, asked with `token` (or none).
async fn me(app: &TestApp, token: Option<&str>) -> Value {
    app.gql_as(token, ME, json!({})).await
}

async fn anonymous_app() -> TestApp {
    spawn_app_with(Db::Sqlite, |_| {}).await
}

fn unauthenticated(body: &Value) -> bool {
    error_code(body) == "UNAUTHENTICATED"
}

#[tokio::test]
async fn registration_answers_at_once_links_sessionm_in_the_background_and_the_code_confirms() {
    let app = anonymous_app().await;
    let phone = "+1 (626) 555-0101";
    let payload = register(&app, phone, "Grace@Example.com").await;
    assert_eq!(payload["userErrors"], json!([]));
    let customer = &payload["customer"];
    assert_eq!(customer["email"], "grace@example.com");
    assert_eq!(customer["phone"], "+16265550101");
    assert_eq!(customer["confirmed"], false);
    let id = customer["id"].as_str().unwrap().to_owned();

    // Steps 7–9 happen after the answer: a SessionM user, its id saved on the Okya account.
    app.eventually("the SessionM link", || async {
        let accounts = app.okya_accounts().await;
        accounts
            .first()
            .is_some_and(|a| a["loyalty_id"].is_string())
    })
    .await;
    let users = app.sessionm_users("grace@example.com").await;
    assert_eq!(users.len(), 1);
    assert_eq!(users[0]["external_id"], id.as_str());

    let codes = app.sent_codes("+16265550101").await;
    assert_eq!(codes.len(), 1);
    let wrong = confirm(&app, "+16265550101", "000000").await;
    assert_eq!(error_codes(&wrong), vec!["OTP_INVALID"]);
    assert_eq!(wrong["accessToken"], json!(null));

    let confirmed = confirm(&app, "+16265550101", &codes[0]).await;
    assert_eq!(confirmed["userErrors"], json!([]));
    assert_eq!(confirmed["customer"], json!({"id": id, "confirmed": true}));
    let token = confirmed["accessToken"].as_str().unwrap();
    assert!(
        confirmed["accessTokenExpiresAt"].as_i64().unwrap()
            > chrono::Utc::now().timestamp() + 3_000
    );

    let shown = me(&app, Some(token)).await;
    assert_eq!(shown["data"]["me"]["id"], id.as_str());
    assert_eq!(shown["data"]["me"]["confirmed"], true);
    assert_eq!(shown["data"]["me"]["loyalty"]["pointsBalance"], 0);
    // A code works once.
    assert_eq!(
        error_codes(&confirm(&app, "+16265550101", &codes[0]).await),
        vec!["OTP_INVALID"]
    );
}

#[tokio::test]
async fn invalid_details_are_user_errors_and_reach_no_upstream() {
    let app = anonymous_app().await;
    let cases = [
        (
            json!({"email": "not-an-email", "phone": "+16265550102", "firstName": "A", "lastName": "B"}),
            vec!["INVALID_EMAIL"],
            vec!["input", "email"],
        ),
        (
            json!({"email": "a@example.com", "phone": "6265550102", "firstName": "A", "lastName": "B"}),
            vec!["INVALID_PHONE"],
            vec!["input", "phone"],
        ),
        (
            json!({"email": "a@example.com", "phone": "+16265550102", "firstName": "  ", "lastName": "B"}),
            vec!["INVALID_NAME"],
            vec!["input", "firstName"],
        ),
        (
            json!({"email": "a@example.com", "phone": "+16265550102", "firstName": "A", "lastName": "x".repeat(51)}),
            vec!["INVALID_NAME"],
            vec!["input", "lastName"],
        ),
    ];
    for (input, codes, field) in cases {
        let payload =
            app.gql_as(None, REGISTER, json!({"i": input})).await["data"]["accountRegister"]
                .clone();
        assert_eq!(error_codes(&payload), codes, "{input}");
        assert_eq!(payload["userErrors"][0]["field"], json!(field));
        assert_eq!(payload["customer"], json!(null));
    }
    let all_bad = json!({"i": {"email": "", "phone": "", "firstName": "", "lastName": ""}});
    let payload = app.gql_as(None, REGISTER, all_bad).await["data"]["accountRegister"].clone();
    assert_eq!(
        error_codes(&payload),
        vec![
            "INVALID_EMAIL",
            "INVALID_PHONE",
            "INVALID_NAME",
            "INVALID_NAME"
        ]
    );
    assert_eq!(app.call_count(CREATE_ACCOUNT).await, 0);
    // The count reads the route registrations reach: a valid one is counted.
    let valid = register(&app, "+16265550102", "a@example.com").await;
    assert_eq!(valid["userErrors"], json!([]));
    assert_eq!(app.call_count(CREATE_ACCOUNT).await, 1);
}

#[tokio::test]
async fn an_existing_email_or_phone_gets_one_error_that_does_not_say_which() {
    let app = anonymous_app().await;
    assert_eq!(
        register(&app, "+16265550103", "ada@example.com").await["userErrors"],
        json!([])
    );
    let same_email = register(&app, "+16265550104", "ada@example.com").await;
    let same_phone = register(&app, "+16265550103", "someone@example.com").await;
    assert_eq!(error_codes(&same_email), vec!["ACCOUNT_EXISTS"]);
    assert_eq!(same_email["userErrors"], same_phone["userErrors"]);
}

#[tokio::test]
async fn codes_are_throttled_per_phone() {
    let app = anonymous_app().await;
    register(&app, "+16265550105", "ada@example.com").await;
    let again = app
        .gql_as(None, RESEND, json!({"i": {"phone": "+16265550105"}}))
        .await["data"]["accountResendOtp"]
        .clone();
    assert_eq!(error_codes(&again), vec!["OTP_THROTTLED"]);
    assert_eq!(app.sent_codes("+16265550105").await.len(), 1);

    // Without the 30-second spacing, the hourly cap of five still holds.
    let app = spawn_app_with(Db::Sqlite, |s| s.auth.otp_resend_interval_secs = 0).await;
    register(&app, "+16265550106", "ada@example.com").await;
    for _ in 0..4 {
        let sent = request_otp(&app, "+16265550106").await;
        assert_eq!(
            sent["data"]["signInRequestOtp"]["userErrors"],
            json!([]),
            "{sent}"
        );
    }
    let sixth = request_otp(&app, "+16265550106").await;
    assert_eq!(
        error_codes(&sixth["data"]["signInRequestOtp"]),
        vec!["OTP_THROTTLED"]
    );
}

#[tokio::test]
async fn a_code_dies_after_five_wrong_tries() {
    let app = anonymous_app().await;
    register(&app, "+16265550107", "ada@example.com").await;
    let code = app.last_code("+16265550107").await;
    for _ in 0..5 {
        assert_eq!(
            error_codes(&confirm(&app, "+16265550107", "999999").await),
            vec!["OTP_INVALID"]
        );
    }
    let right_too_late = confirm(&app, "+16265550107", &code).await;
    assert_eq!(error_codes(&right_too_late), vec!["OTP_ATTEMPTS_EXCEEDED"]);
    assert_eq!(right_too_late["accessToken"], json!(null));
    // Our own count refused it: Okya (which counts too) saw only the five wrong ones.
    assert_eq!(app.call_count(VERIFY_OTP).await, 5);
}

#[tokio::test]
async fn codes_expire() {
    let app = spawn_app_with(Db::Sqlite, |s| s.auth.otp_ttl_secs = 1).await;
    register(&app, "+16265550108", "ada@example.com").await;
    let code = app.last_code("+16265550108").await;
    // Past the one-second lifetime by construction. Nothing can be polled instead: every
    // try at the code counts against it, and the right one would use it up.
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    assert_eq!(
        error_codes(&confirm(&app, "+16265550108", &code).await),
        vec!["OTP_EXPIRED"]
    );
}

#[tokio::test]
async fn a_wrong_code_and_an_unknown_phone_answer_alike() {
    let app = anonymous_app().await;
    register(&app, "+16265550109", "ada@example.com").await;
    assert_eq!(app.sent_codes("+16265550109").await.len(), 1);
    // Asking for a code for an unknown phone looks the same: Okya is asked as for any
    // phone (no shortcut to time), and it sends nothing.
    let unknown = request_otp(&app, "+16265550199").await;
    assert_eq!(unknown["data"]["signInRequestOtp"]["userErrors"], json!([]));
    assert_eq!(app.call_count(SEND_OTP).await, 1);
    assert_eq!(app.sent_codes("+16265550199").await, Vec::<String>::new());

    let wrong = sign_in(&app, "+16265550109", "000000").await;
    let unknown = sign_in(&app, "+16265550199", "123456").await;
    let never_asked = sign_in(&app, "+16265550188", "123456").await;
    let malformed = sign_in(&app, "not a phone", "123456").await;
    let expected = &wrong["data"]["signIn"]["userErrors"];
    assert_eq!(error_codes(&wrong["data"]["signIn"]), vec!["OTP_INVALID"]);
    for other in [&unknown, &never_asked, &malformed] {
        assert_eq!(&other["data"]["signIn"]["userErrors"], expected, "{other}");
    }
}

#[tokio::test]
async fn returning_customers_sign_in_by_code() {
    let app = spawn_app_with(Db::Sqlite, |s| s.auth.otp_resend_interval_secs = 0).await;
    let first = app.sign_up("+16265550110", "ada@example.com").await;
    let asked = request_otp(&app, "+16265550110").await;
    assert_eq!(asked["data"]["signInRequestOtp"]["userErrors"], json!([]));
    let code = app.last_code("+16265550110").await;
    let signed_in = sign_in(&app, "+16265550110", &code).await;
    let payload = &signed_in["data"]["signIn"];
    assert_eq!(payload["userErrors"], json!([]));
    assert_eq!(payload["customer"]["id"], first.id.as_str());
    let second = me(&app, payload["accessToken"].as_str()).await;
    assert_eq!(second["data"]["me"]["email"], "ada@example.com");
    // Both sessions are live: signing in on a second device does not sign out the first.
    let still = me(&app, Some(&first.access_token)).await;
    assert_eq!(still["data"]["me"]["id"], first.id.as_str());
}

#[tokio::test]
async fn refresh_tokens_rotate_and_a_reused_one_ends_the_session() {
    let app = anonymous_app().await;
    let customer = app.sign_up("+16265550111", "ada@example.com").await;
    let refreshed = refresh(&app, &customer.refresh_token).await["data"]["tokenRefresh"].clone();
    assert_eq!(refreshed["userErrors"], json!([]));
    let new_access = refreshed["accessToken"].as_str().unwrap().to_owned();
    let new_refresh = refreshed["refreshToken"].as_str().unwrap().to_owned();
    assert_ne!(new_refresh, customer.refresh_token);
    assert_eq!(
        me(&app, Some(&new_access)).await["data"]["me"]["id"],
        customer.id.as_str()
    );

    // The first refresh token again: someone copied it. The whole session ends.
    let reused = refresh(&app, &customer.refresh_token).await;
    assert_eq!(
        error_codes(&reused["data"]["tokenRefresh"]),
        vec!["REFRESH_TOKEN_INVALID"]
    );
    let after = refresh(&app, &new_refresh).await;
    assert_eq!(
        error_codes(&after["data"]["tokenRefresh"]),
        vec!["REFRESH_TOKEN_INVALID"]
    );
    assert!(unauthenticated(&me(&app, Some(&new_access)).await));
    assert!(unauthenticated(
        &me(&app, Some(&customer.access_token)).await
    ));
    let garbage = refresh(&app, "rt_nonsense").await;
    assert_eq!(
        error_codes(&garbage["data"]["tokenRefresh"]),
        vec!["REFRESH_TOKEN_INVALID"]
    );
}

#[tokio::test]
async fn signing_out_revokes_the_tokens_at_once() {
    let app = anonymous_app().await;
    let customer = app.sign_up("+16265550112", "ada@example.com").await;
    let out = app
        .gql_as(Some(&customer.access_token), SIGN_OUT, json!({}))
        .await;
    assert_eq!(out["data"]["signOut"]["userErrors"], json!([]));
    assert!(unauthenticated(
        &me(&app, Some(&customer.access_token)).await
    ));
    let refreshed = refresh(&app, &customer.refresh_token).await;
    assert_eq!(
        error_codes(&refreshed["data"]["tokenRefresh"]),
        vec!["REFRESH_TOKEN_INVALID"]
    );
    assert!(unauthenticated(
        &app.gql_as(None, SIGN_OUT, json!({})).await
    ));
}

#[tokio::test]
async fn missing_expired_tampered_and_foreign_tokens() {
    let app = spawn_app_with(Db::Sqlite, |s| s.auth.access_token_ttl_secs = 1).await;
    let customer = app.sign_up("+16265550113", "ada@example.com").await;
    assert_eq!(me(&app, None).await["data"]["me"], json!(null));
    let mut tampered = customer.access_token.clone();
    tampered.insert(tampered.len() - 3, 'x');
    for token in [tampered.as_str(), "not.a.jwt", ""] {
        let body = me(&app, Some(token)).await;
        // An empty bearer token is a presented, invalid one: not the same as none.
        assert!(unauthenticated(&body), "{token:?}: {body}");
    }
    // A token signed with another key.
    let other = spawn_app_with(Db::Sqlite, |s| {
        s.auth.jwt_secret = "another-secret-that-is-long-enough-1234".to_owned().into()
    })
    .await;
    let foreign = other.sign_up("+16265550113", "ada@example.com").await;
    assert!(unauthenticated(
        &me(&app, Some(&foreign.access_token)).await
    ));
    // `Basic` credentials are not a bearer token.
    let body: Value = app
        .http
        .post(app.graphql_url())
        .header("content-type", "application/json")
        .header("authorization", "Basic YWRhOnB3")
        .body(json!({"query": ME}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(unauthenticated(&body));
    // The token says it lives one second, and stops working once that has passed.
    let claims = customer
        .access_token
        .split('.')
        .nth(1)
        .and_then(|part| {
            use base64::Engine;
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .ok()
        })
        .and_then(|json| serde_json::from_slice::<Value>(&json).ok())
        .expect("JWT claims");
    assert_eq!(
        claims["exp"].as_i64(),
        claims["iat"].as_i64().map(|iat| iat + 1)
    );
    app.eventually("the access token to expire", || async {
        unauthenticated(&me(&app, Some(&customer.access_token)).await)
    })
    .await;
}

/// Makes SessionM fail, restarts the service, and shows the link then completes once.
async fn the_sessionm_link_survives_failure_and_restart(kind: Db) {
    let okya_sim = okya_simulator().await;
    let sessionm_faults = Faults::new(0, 1.0);
    let sessionm_sim = crate::helpers::sessionm_simulator(sessionm_faults.clone()).await;
    let (db, url) = TestDb::new(kind).await;
    let mut settings = test_settings(url);
    settings.okya.base_url = Some(okya_sim.base_url.clone());
    crate::helpers::configure_sessionm(&mut settings, &sessionm_sim);
    settings.jobs.poll_interval_ms = 50;
    settings.jobs.max_backoff_ms = 100;
    // A job cut off by the stop stays leased this long before the restarted service may
    // take it over, as another instance would.
    settings.jobs.lease_ms = 1_000;

    let app = spawn_with_settings(settings.clone()).await;
    let payload = register(&app, "+16265550114", "ada@example.com").await;
    assert_eq!(
        payload["userErrors"],
        json!([]),
        "registration succeeds while SessionM is down"
    );
    let id = payload["customer"]["id"].as_str().unwrap().to_owned();
    let customer = app.sign_up_confirm_only("+16265550114").await;
    app.eventually("several failed link attempts", || async {
        sessionm_faults.calls().values().sum::<u64>() >= 3
    })
    .await;
    assert_eq!(
        me(&app, Some(&customer)).await["data"]["me"]["loyalty"],
        json!(null)
    );
    drop(app);

    sessionm_faults.apply(cbtl_sandbox::faults::FaultUpdate {
        error_rate: Some(0.0),
        ..Default::default()
    });
    let app = spawn_with_settings(settings).await;
    // The simulators the test started are the ones the service is configured with.
    app.wait_for_link(&customer).await;
    let accounts = app.okya_accounts().await;
    let users = app.sessionm_users("ada@example.com").await;
    assert_eq!(users.len(), 1, "exactly one SessionM user: {users:?}");
    assert_eq!(users[0]["external_id"], id.as_str());
    assert_eq!(accounts[0]["loyalty_id"], users[0]["id"]);
    drop(app);
    drop(db);
}

#[tokio::test]
async fn the_sessionm_link_survives_failure_and_restart_on_sqlite() {
    the_sessionm_link_survives_failure_and_restart(Db::Sqlite).await;
}

#[tokio::test]
async fn the_sessionm_link_survives_failure_and_restart_on_postgres() {
    the_sessionm_link_survives_failure_and_restart(Db::Postgres).await;
}

#[tokio::test]
async fn the_account_story_runs_on_postgres() {
    let app = spawn_app_with(Db::Postgres, |s| s.auth.otp_resend_interval_secs = 0).await;
    let customer = app.sign_up("+16265550115", "ada@example.com").await;
    assert_eq!(
        me(&app, Some(&customer.access_token)).await["data"]["me"]["id"],
        customer.id.as_str()
    );
    // Once confirmed, the same details and other details are both an existing account.
    for email in ["ada@example.com", "x@example.com"] {
        assert_eq!(
            error_codes(&register(&app, "+16265550115", email).await),
            vec!["ACCOUNT_EXISTS"],
            "{email}"
        );
    }
    // Our own count of wrong codes, on PostgreSQL: five wrong tries, then the right code
    // is refused without Okya being asked.
    let asked = request_otp(&app, "+16265550115").await;
    assert_eq!(asked["data"]["signInRequestOtp"]["userErrors"], json!([]));
    let code = app.last_code("+16265550115").await;
    let verifies_before = app.call_count(VERIFY_OTP).await;
    for _ in 0..5 {
        let wrong = sign_in(&app, "+16265550115", "000000").await["data"]["signIn"].clone();
        assert_eq!(error_codes(&wrong), vec!["OTP_INVALID"], "{wrong}");
        assert_eq!(wrong["accessToken"], json!(null));
    }
    let right_too_late = sign_in(&app, "+16265550115", &code).await["data"]["signIn"].clone();
    assert_eq!(error_codes(&right_too_late), vec!["OTP_ATTEMPTS_EXCEEDED"]);
    assert_eq!(app.call_count(VERIFY_OTP).await, verifies_before + 5);
    // Wrong codes end no session.
    let refreshed = refresh(&app, &customer.refresh_token).await;
    assert_eq!(refreshed["data"]["tokenRefresh"]["userErrors"], json!([]));
}

#[tokio::test]
async fn a_repeated_registration_gets_its_first_answer_while_the_account_is_unconfirmed() {
    let app = anonymous_app().await;
    let first = register(&app, "+16265550120", "ada@example.com").await;
    assert_eq!(first["userErrors"], json!([]));
    // The app retries, say after a lost answer: the same account, no second code.
    let again = register(&app, "+16265550120", "ada@example.com").await;
    assert_eq!(again["userErrors"], json!([]), "{again}");
    assert_eq!(again["customer"], first["customer"]);
    assert_eq!(app.sent_codes("+16265550120").await.len(), 1);
    assert_eq!(app.okya_accounts().await.len(), 1);
    // Other details are another registration, refused like any other.
    let other = register(&app, "+16265550120", "someone@example.com").await;
    assert_eq!(error_codes(&other), vec!["ACCOUNT_EXISTS"]);
}

#[tokio::test]
async fn registering_again_after_confirming_is_an_existing_account() {
    let app = anonymous_app().await;
    let first = register(&app, "+16265550121", "ada@example.com").await;
    let code = app.last_code("+16265550121").await;
    let confirmed = confirm(&app, "+16265550121", &code).await;
    assert_eq!(confirmed["userErrors"], json!([]));
    let token = confirmed["accessToken"].as_str().expect("token").to_owned();

    let again = register(&app, "+16265550121", "ada@example.com").await;
    assert_eq!(error_codes(&again), vec!["ACCOUNT_EXISTS"], "{again}");
    assert_eq!(again["customer"], json!(null));
    // Nothing the replay said was taken for the truth: the customer is still confirmed.
    let shown = me(&app, Some(&token)).await;
    assert_eq!(shown["data"]["me"]["id"], first["customer"]["id"]);
    assert_eq!(shown["data"]["me"]["confirmed"], true);
}

#[tokio::test]
async fn registering_again_after_confirming_in_another_app_is_an_existing_account() {
    let app = anonymous_app().await;
    assert_eq!(
        register(&app, "+16265550122", "ada@example.com").await["userErrors"],
        json!([])
    );
    // The customer confirms through another of Okya's apps: the service never hears of it.
    let code = app.last_code("+16265550122").await;
    let verified = app
        .http
        .post(format!("{}/auth/v1/otp/verify", app.sim_url(Sim::Okya)))
        .bearer_auth("okya_sandbox_key")
        .json(&json!({"phone": "+16265550122", "code": code}))
        .send()
        .await
        .expect("verify at Okya");
    assert!(verified.status().is_success(), "{}", verified.status());
    assert_eq!(app.okya_accounts().await[0]["confirmed"], true);

    let again = register(&app, "+16265550122", "ada@example.com").await;
    assert_eq!(error_codes(&again), vec!["ACCOUNT_EXISTS"], "{again}");
}

#[tokio::test]
async fn a_registration_is_replayed_only_while_its_code_lives() {
    // The window is the code's lifetime: a one-second code makes a one-second window.
    let app = spawn_app_with(Db::Sqlite, |s| s.auth.otp_ttl_secs = 1).await;
    assert_eq!(
        register(&app, "+16265550123", "ada@example.com").await["userErrors"],
        json!([])
    );
    app.eventually("the same details to be an existing account", || async {
        let again = register(&app, "+16265550123", "ada@example.com").await;
        error_codes(&again) == ["ACCOUNT_EXISTS"]
    })
    .await;
    assert_eq!(app.okya_accounts().await.len(), 1);
}

#[tokio::test]
async fn a_replayed_registration_does_not_restart_the_count_of_wrong_codes() {
    let app = anonymous_app().await;
    register(&app, "+16265550124", "ada@example.com").await;
    let code = app.last_code("+16265550124").await;
    for _ in 0..5 {
        assert_eq!(
            error_codes(&confirm(&app, "+16265550124", "999999").await),
            vec!["OTP_INVALID"]
        );
    }
    let verifies = app.call_count(VERIFY_OTP).await;
    assert_eq!(verifies, 5);
    // A replay sends no code, so it must not give the guesser five more tries.
    let again = register(&app, "+16265550124", "ada@example.com").await;
    assert_eq!(again["userErrors"], json!([]));
    let right_too_late = confirm(&app, "+16265550124", &code).await;
    assert_eq!(error_codes(&right_too_late), vec!["OTP_ATTEMPTS_EXCEEDED"]);
    assert_eq!(
        app.call_count(VERIFY_OTP).await,
        verifies,
        "the sixth try was refused by our own count, before reaching Okya"
    );
}

#[tokio::test]
async fn a_sessionm_link_that_died_is_tried_again_at_the_next_sign_in() {
    let app = spawn_app_with(Db::Sqlite, |s| {
        s.jobs.poll_interval_ms = 50;
    })
    .await;
    // SessionM refuses the new user once: a definite refusal, so the link job dies.
    app.refuse_next(CREATE_MEMBER, 422, "validation", 1).await;
    register(&app, "+16265550125", "ada@example.com").await;
    app.eventually("the link job to die", || async {
        app.readiness().await["jobs"]["dead"] == 1
    })
    .await;
    let token = app.sign_up_confirm_only("+16265550125").await;
    app.wait_for_link(&token).await;
    let users = app.sessionm_users("ada@example.com").await;
    assert_eq!(users.len(), 1);
    assert_eq!(app.okya_accounts().await[0]["loyalty_id"], users[0]["id"]);
}
