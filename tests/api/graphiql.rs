//! GraphiQL as a developer meets it: a real headless Chromium that can reach nothing but the
//! service opens `/graphql`, the editor renders, the docs explorer lists the schema, a query
//! runs, and a subscription goes over the websocket with the headers typed in the page.

use crate::browser::Browser;
use crate::helpers::{Db, TestApp, spawn_app, spawn_app_with};
use fantoccini::Locator;
use futures_util::FutureExt;
use serde_json::{Value, json};
use std::panic::AssertUnwindSafe;

#[tokio::test]
async fn graphiql_renders_with_no_network_lists_the_schema_and_runs_queries_and_subscriptions() {
    // At the default limits: GraphiQL's own introspection query must pass them.
    let app = spawn_app_with(Db::Sqlite, |_| {}).await;
    app.sign_up_and_use("+16265550190", "grace@example.com")
        .await;
    let browser = Browser::start().await;
    // The browser is closed whatever happens, so a failure leaves no Chromium behind.
    let outcome = AssertUnwindSafe(use_graphiql(&app, &browser))
        .catch_unwind()
        .await;
    if outcome.is_err() {
        browser.screenshot_for_failure().await;
    }
    browser.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn use_graphiql(app: &TestApp, browser: &Browser) {
    browser
        .client
        .goto(&app.graphql_url())
        .await
        .expect("the page opens");
    browser
        .element(
            "the query editor",
            Locator::Css(".graphiql-query-editor .CodeMirror"),
        )
        .await;

    // The docs explorer, from the schema GraphiQL fetched by introspection.
    browser
        .element(
            "the docs explorer button",
            Locator::Css(r#"button[aria-label="Show Documentation Explorer"]"#),
        )
        .await
        .click()
        .await
        .expect("docs explorer opens");
    browser
        .element(
            "the Query root type in the docs explorer",
            Locator::XPath(
                "//section[@aria-label='Documentation Explorer']\
                 //a[contains(@class,'graphiql-doc-explorer-type-name') and text()='Query']",
            ),
        )
        .await
        .click()
        .await
        .expect("Query opens");
    browser
        .element(
            "Query.stores in the docs explorer",
            Locator::XPath(
                "//section[@aria-label='Documentation Explorer']\
                 //a[contains(@class,'graphiql-doc-explorer-field-name') and text()='stores']",
            ),
        )
        .await;

    let result = run(browser, "{ stores { id name } }").await;
    let stores = result["data"]["stores"]
        .as_array()
        .unwrap_or_else(|| panic!("stores in {result}"));
    assert!(
        stores.iter().any(|store| store["id"] == "str_pasadena"),
        "{result}"
    );
    browser.screenshot_if_asked().await;

    // A subscription goes over the websocket (a fetcher without one refuses it with a
    // message, no error code); without a token the service refuses the caller...
    let subscription =
        r#"subscription { orderStatusChanged(orderId: "ord_nobody") { id status } }"#;
    let refused = run(browser, subscription).await;
    assert_eq!(codes(&refused), ["UNAUTHENTICATED"], "{refused}");
    // ...and with the README's header in the Headers tab, it knows the customer and finds
    // no such order of theirs.
    browser
        .element(
            "the Headers tab",
            Locator::Css(r#"button[data-name="headers"]"#),
        )
        .await
        .click()
        .await
        .expect("Headers tab opens");
    let token = app
        .token
        .lock()
        .unwrap()
        .clone()
        .expect("a signed-in customer");
    let headers = json!({"Authorization": format!("Bearer {token}")}).to_string();
    browser
        .until(
            "the headers editor takes the header",
            "const editor = document.querySelector(\
               '.graphiql-editor-tool .graphiql-editor:not(.hidden) .CodeMirror');\
             if (!editor) return null;\
             editor.CodeMirror.setValue(arguments[0]);\
             return editor.CodeMirror.getValue() === arguments[0];",
            vec![json!(headers)],
        )
        .await;
    let signed_in = run(browser, subscription).await;
    assert_eq!(codes(&signed_in), ["NOT_FOUND"], "{signed_in}");

    // Everything the page loaded came from the service itself.
    let seen = browser
        .until(
            "the page's resource timings",
            "return {origin: location.origin, \
                     resources: performance.getEntriesByType('resource').map(e => e.name)};",
            vec![],
        )
        .await;
    let origin = seen["origin"].as_str().expect("origin");
    let resources: Vec<&str> = seen["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        resources.iter().any(|r| r.ends_with("/graphiql.min.js")),
        "the page's scripts are among what it loaded: {resources:?}"
    );
    for resource in &resources {
        assert!(
            resource.starts_with(&format!("{origin}/")),
            "{resource} is not from {origin}"
        );
    }
}

/// Puts `query` in the query editor, runs it and returns the response GraphiQL shows.
async fn run(browser: &Browser, query: &str) -> Value {
    let response_editor =
        "const editor = document.querySelector('.graphiql-response .CodeMirror');";
    let before = browser
        .client
        .execute(
            &format!("{response_editor} return editor ? editor.CodeMirror.getValue() : '';"),
            vec![],
        )
        .await
        .expect("the response editor reads");
    // GraphiQL parses the editor's text a moment after each edit (debounced) and decides
    // from that parse, not from the text, whether an operation is a subscription for the
    // websocket: run only once the parse is of this query, as a person's pause would ensure.
    browser
        .until(
            "GraphiQL to parse the query",
            "const editor = document.querySelector('.graphiql-query-editor .CodeMirror').CodeMirror;\
             if (editor.getValue() !== arguments[0]) editor.setValue(arguments[0]);\
             const parsed = editor.documentAST;\
             return !!parsed && !!parsed.loc && parsed.loc.source.body === arguments[0];",
            vec![json!(query)],
        )
        .await;
    browser
        .element(
            "the run button",
            Locator::Css("button.graphiql-execute-button"),
        )
        .await
        .click()
        .await
        .expect("the query runs");
    let shown = browser
        .until(
            &format!("the response to {query}"),
            &format!(
                "{response_editor}\
                 const shown = editor ? editor.CodeMirror.getValue() : '';\
                 return shown !== arguments[0] ? shown : null;"
            ),
            vec![before],
        )
        .await;
    let shown = shown.as_str().expect("the response is text");
    serde_json::from_str(shown).unwrap_or_else(|e| panic!("GraphiQL shows JSON ({e}): {shown}"))
}

/// The `extensions.code` of each error in a response.
fn codes(response: &Value) -> Vec<&str> {
    response["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["extensions"]["code"].as_str())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn graphiql_files_come_from_the_service_cached_by_content_hash() {
    let app = spawn_app().await;
    let page = app
        .http
        .get(app.graphql_url())
        .header("accept", "text/html")
        .send()
        .await
        .expect("page");
    assert_eq!(page.status(), 200);
    let headers = page.headers().clone();
    assert_eq!(headers["content-type"], "text/html; charset=utf-8");
    assert_eq!(headers["cache-control"], "no-cache");
    let csp = headers["content-security-policy"].to_str().expect("CSP");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("script-src 'self';"), "{csp}");
    let page_etag = headers["etag"].clone();
    let html = page.text().await.expect("html");
    assert!(
        !html.contains("//"),
        "the page names no other host, nor any absolute URL: {html}"
    );

    // Every file the page loads, by the relative URL it uses.
    let urls: Vec<&str> = html
        .split(['"', '\''])
        .filter(|piece| piece.starts_with("graphiql/"))
        .collect();
    for name in [
        "react.production.min.js",
        "react-dom.production.min.js",
        "graphiql.min.js",
        "graphiql.min.css",
        "start.js",
    ] {
        assert!(
            urls.iter().any(|url| url.ends_with(&format!("/{name}"))),
            "the page loads {name}: {html}"
        );
    }
    for url in &urls {
        let full = format!("{}/{url}", app.url);
        let response = app.http.get(&full).send().await.expect("asset");
        assert_eq!(response.status(), 200, "{url}");
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let expected = if url.ends_with(".css") {
            "text/css; charset=utf-8"
        } else {
            "text/javascript; charset=utf-8"
        };
        assert_eq!(content_type, expected, "{url}");
        assert_eq!(
            response.headers()["cache-control"],
            "public, max-age=31536000, immutable",
            "{url}"
        );
        assert_eq!(response.headers()["x-content-type-options"], "nosniff");
        let etag = response.headers()["etag"].clone();
        let hash = url.split('/').nth(1).expect("graphiql/<hash>/<name>");
        assert_eq!(etag.to_str().unwrap(), format!("\"{hash}\""), "{url}");
        assert!(!response.bytes().await.expect("body").is_empty());

        let again = app
            .http
            .get(&full)
            .header("if-none-match", etag.clone())
            .send()
            .await
            .expect("revalidation");
        assert_eq!(again.status(), 304, "{url}");
        assert_eq!(again.headers()["etag"], etag);

        // Another build's name for the file is not this file.
        let stale = full.replace(hash, "0123456789abcdef");
        let response = app.http.get(&stale).send().await.expect("stale asset");
        assert_eq!(response.status(), 404, "{stale}");
    }

    let again = app
        .http
        .get(app.graphql_url())
        .header("accept", "text/html")
        .header("if-none-match", page_etag.clone())
        .send()
        .await
        .expect("page revalidation");
    assert_eq!(again.status(), 304);
    assert_eq!(again.headers()["etag"], page_etag);
    assert_eq!(again.headers()["vary"], "Accept");
}
