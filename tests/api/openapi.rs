//! `GET /openapi.json` against the routes the running app serves, both ways:
//!
//! - every documented (path, method) reaches a handler (not the 404 fallback, not a 405), and
//!   every other method on a documented path is a 405;
//! - every route the app serves is documented. The app's router cannot list its routes, so the
//!   test finds the candidates itself: every string literal in `src/` that looks like a path
//!   (a route is registered with a literal path, in `#[utoipa::path]` or anywhere else), tried
//!   with every method against the app; whatever is served must be in the document. (A raw
//!   `Router::route` is refused by clippy besides; see `clippy.toml`.)
//!
//! Each document checked is also written to `target/tmp/openapi/` for the validator in
//! `.ci/run`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use quickdonate::http::problem::ProblemType;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::helpers::{TestApp, spawn_app, spawn_app_with};

const METHODS: [&str; 5] = ["get", "post", "put", "patch", "delete"];
/// What the router's fallback answers: the path is not served at all.
const NOTHING_HERE: &str = "There is nothing at this path.";

/// (path template, method) of every operation in `document`.
fn operations(document: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut operations = BTreeMap::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        let methods = item
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| {
                METHODS.contains(&k.as_str()) || ["head", "options", "trace"].contains(&k.as_str())
            })
            .cloned()
            .collect();
        operations.insert(path.clone(), methods);
    }
    operations
}

/// `template` with each `{param}` (or `{*rest}`) filled in.
fn concrete(template: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in template.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                out.push_str("x1");
            }
            _ if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

/// Whether the concrete `path` is an instance of `template`.
fn matches(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    if let Some(last) = t.last()
        && last.starts_with("{*")
    {
        return p.len() >= t.len()
            && t[..t.len() - 1]
                .iter()
                .zip(&p)
                .all(|(t, p)| t.starts_with('{') || t == p);
    }
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| (t.starts_with('{') && !p.is_empty()) || t == p)
}

/// What the app answers `method` on `path`: its status, and whether it is the fallback's "no
/// such path".
async fn probe(app: &TestApp, method: &str, path: &str) -> (StatusCode, bool) {
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let response = app
        .http
        .request(method, format!("{}{path}", app.address))
        .send()
        .await
        .expect("the app answers");
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    let unrouted = status == StatusCode::NOT_FOUND && body.contains(NOTHING_HERE);
    (status, unrouted)
}

/// Every string literal in the crate's source that is a path: `"/..."` of path characters.
fn path_literals() -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for text in source_files() {
        for (start, _) in text.match_indices("\"/") {
            let rest = &text[start + 1..];
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "/_-.{}*".contains(c)))
                .unwrap_or(rest.len());
            if rest[len..].starts_with('"') {
                found.insert(rest[..len].to_owned());
            }
        }
    }
    found
}

/// The text of every `.rs` file under `src/`.
fn source_files() -> Vec<String> {
    fn walk(dir: &Path, texts: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, texts);
            } else if path.extension().is_some_and(|e| e == "rs") {
                texts.push(std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut texts = Vec::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        &mut texts,
    );
    texts
}

/// The document `app` serves, checked against the routes it serves both ways; written to
/// `target/tmp/openapi/{name}.json`.
async fn check(app: &TestApp, name: &str) -> Value {
    let response = app.get("/openapi.json").await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let document: Value = response.json().await.unwrap();
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1."),
        "{}",
        document["openapi"]
    );
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("openapi");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{name}.json")),
        serde_json::to_string_pretty(&document).unwrap(),
    )
    .unwrap();

    let documented = operations(&document);
    assert!(!documented.is_empty());
    let mut ids = BTreeSet::new();
    for item in document["paths"].as_object().unwrap().values() {
        for operation in item.as_object().unwrap().values() {
            let id = operation["operationId"].as_str().expect("an operationId");
            assert!(ids.insert(id.to_owned()), "operationId {id} is not unique");
        }
    }
    let mut wrong = Vec::new();

    // The document's side: each operation is served, and nothing else on its path is.
    for (template, methods) in &documented {
        let path = concrete(template);
        for method in METHODS {
            let (status, unrouted) = probe(app, method, &path).await;
            let served = !unrouted && status != StatusCode::METHOD_NOT_ALLOWED;
            if methods.contains(method) && !served {
                wrong.push(format!(
                    "documented but not served: {method} {template} ({status})"
                ));
            }
            if !methods.contains(method) && status != StatusCode::METHOD_NOT_ALLOWED {
                wrong.push(format!(
                    "not documented, yet not a 405: {method} {template} ({status})"
                ));
            }
        }
    }

    // The app's side: whatever path in the source it serves is documented, with each method.
    for literal in path_literals() {
        let path = concrete(&literal);
        for method in METHODS {
            let (status, unrouted) = probe(app, method, &path).await;
            if unrouted || status == StatusCode::METHOD_NOT_ALLOWED {
                continue;
            }
            let documented_here = documented
                .iter()
                .any(|(template, methods)| matches(template, &path) && methods.contains(method));
            if !documented_here {
                wrong.push(format!(
                    "served but not documented: {method} {literal} (as {path}: {status})"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{name}:\n{}", wrong.join("\n"));

    // Every schema referred to is there.
    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(target)) = map.get("$ref") {
                    found.push(target);
                }
                map.values().for_each(|v| refs(v, found));
            }
            Value::Array(items) => items.iter().for_each(|v| refs(v, found)),
            _ => {}
        }
    }
    let mut found = Vec::new();
    refs(&document, &mut found);
    for target in found {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("a $ref elsewhere: {target}"));
        assert!(
            document["components"]["schemas"][name].is_object(),
            "{target} is not in the document"
        );
    }
    document
}

/// Every `/problems/<name>` in `text`.
fn problem_types(text: &str) -> BTreeSet<String> {
    text.match_indices("/problems/")
        .map(|(start, _)| {
            let rest = &text[start + "/problems/".len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_lowercase() || c == '-'))
                .unwrap_or(rest.len());
            format!("/problems/{}", &rest[..end])
        })
        .collect()
}

/// Every problem type of the catalogue is made somewhere in the code (`ProblemType::<Name>`
/// outside the catalogue's own table), so the catalogue lists no problem nobody answers.
#[test]
fn every_problem_type_in_the_catalogue_is_made_by_the_code() {
    let sources = source_files().join("\n");
    for kind in ProblemType::ALL {
        let made = format!("ProblemType::{kind:?}");
        let used = sources.match_indices(&made).any(|(at, _)| {
            !sources[at + made.len()..].starts_with(|c: char| c.is_ascii_alphanumeric())
        });
        assert!(
            used,
            "{} ({made}) is in the catalogue, but nothing makes it",
            kind.uri()
        );
    }
}

/// The README's tables of problems name only the catalogue's types, each with its status, and
/// name every one of them.
#[test]
fn the_readmes_problem_tables_agree_with_the_catalogue() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut documented = BTreeSet::new();
    for line in readme.lines() {
        let Some(row) = line.strip_prefix("| `/problems/") else {
            continue;
        };
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let uri = format!("/problems/{}", cells[0].trim_end_matches('`'));
        let kind = ProblemType::from_uri(&uri)
            .unwrap_or_else(|| panic!("the README documents {uri}, which the catalogue lacks"));
        assert_eq!(
            cells[1],
            kind.status().as_u16().to_string(),
            "the README's status for {uri}"
        );
        documented.insert(uri);
    }
    let catalogue: BTreeSet<String> = ProblemType::ALL.iter().map(|k| k.uri()).collect();
    assert_eq!(
        documented, catalogue,
        "the README's tables and the catalogue"
    );
}

fn operation<'a>(document: &'a Value, path: &str, method: &str) -> &'a Value {
    let operation = &document["paths"][path][method];
    assert!(operation.is_object(), "no {method} {path}");
    operation
}

fn parameter_names(operation: &Value, place: &str) -> Vec<String> {
    operation["parameters"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .filter(|p| p["in"] == place)
                .map(|p| p["name"].as_str().unwrap().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn the_document_of_a_simulated_app_matches_its_routes() {
    // Payments simulated, /metrics on the main listener: every route there is.
    let app = spawn_app_with(|s| {
        s.stripe_secret_key = None;
        s.stripe_publishable_key = None;
    })
    .await;
    let document = check(&app, "simulated").await;
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.contains_key("/v1/simulator/payouts"));
    assert!(paths.contains_key("/metrics"));
}

#[tokio::test]
async fn the_document_follows_what_the_app_serves() {
    // Real Stripe, /metrics on its own listener: no simulator, no /metrics on the main one.
    let app = spawn_app_with(|s| s.metrics_addr = Some("127.0.0.1:0".parse().unwrap())).await;
    let document = check(&app, "stripe").await;
    let paths = document["paths"].as_object().unwrap();
    assert!(!paths.keys().any(|p| p.starts_with("/v1/simulator/")));
    assert!(!paths.contains_key("/metrics"));
    assert!(paths.contains_key("/v1/campaigns/{slug}/donations"));
}

/// Every string in `value` that holds a run of three spaces or more: a description whose
/// source line was joined without its `\` continuation.
fn runs_of_spaces(value: &Value, found: &mut Vec<String>) {
    match value {
        Value::String(text) if text.trim().contains("   ") => found.push(text.clone()),
        Value::Array(items) => items.iter().for_each(|v| runs_of_spaces(v, found)),
        Value::Object(map) => map.values().for_each(|v| runs_of_spaces(v, found)),
        _ => {}
    }
}

#[tokio::test]
async fn the_documents_prose_reads_as_written() {
    let app = spawn_app().await;
    let document: Value = app.get("/openapi.json").await.json().await.unwrap();
    let mut found = Vec::new();
    runs_of_spaces(&document, &mut found);
    assert!(found.is_empty(), "runs of spaces in: {found:#?}");
}

#[tokio::test]
async fn the_document_names_the_headers_auth_and_problems() {
    let app = spawn_app().await;
    let document: Value = app.get("/openapi.json").await.json().await.unwrap();

    let create = operation(&document, "/v1/campaigns/{slug}/donations", "post");
    assert!(parameter_names(create, "header").contains(&"Idempotency-Key".to_owned()));
    assert!(create["requestBody"]["content"]["application/json"].is_object());
    assert!(create["responses"]["201"]["content"]["application/json"].is_object());
    let webhook = operation(&document, "/v1/webhooks/stripe", "post");
    assert!(parameter_names(webhook, "header").contains(&"Stripe-Signature".to_owned()));

    let scheme = &document["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let secured = operation["security"]
                .as_array()
                .is_some_and(|s| s.iter().any(|r| r.get("bearerAuth").is_some()));
            assert_eq!(
                secured,
                path.starts_with("/v1/finance/"),
                "{method} {path}: bearerAuth on the finance routes, and only there"
            );
            assert!(
                operation["summary"].as_str().is_some_and(|s| !s.is_empty()),
                "{method} {path} has no summary"
            );
            // Every error an operation documents is a Problem, as application/problem+json
            // (unless it is a page for people: text/html).
            for (status, response) in operation["responses"].as_object().unwrap() {
                let html = response["content"]["text/html"].is_object();
                if (status.starts_with('4') || status.starts_with('5')) && !html {
                    let problem = &response["content"]["application/problem+json"]["schema"];
                    assert_eq!(
                        problem["$ref"], "#/components/schemas/Problem",
                        "{method} {path} {status}"
                    );
                    assert!(
                        response["description"]
                            .as_str()
                            .is_some_and(|d| d.contains("/problems/")),
                        "{method} {path} {status} names no problem type"
                    );
                }
            }
        }
    }
    // The Problem schema lists every problem type of the catalogue, and only those, in its
    // table (each with its status) and as the values its `type` takes; each operation names
    // only types it lists.
    let problem = &document["components"]["schemas"]["Problem"];
    let catalogue: BTreeSet<String> = ProblemType::ALL.iter().map(|k| k.uri()).collect();
    let description = problem["description"].as_str().unwrap();
    let listed = problem_types(description);
    assert_eq!(
        listed, catalogue,
        "the Problem schema's table and the catalogue"
    );
    for kind in ProblemType::ALL {
        let row = format!("| `{}` | {} |", kind.uri(), kind.status().as_u16());
        assert!(description.contains(&row), "{row} in the table");
    }
    let values: BTreeSet<String> = problem["properties"]["type"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(values, catalogue, "the values `type` takes");
    let named = problem_types(&document["paths"].to_string());
    assert!(named.is_subset(&listed), "{:?}", named.difference(&listed));
    for field in ["type", "title", "status", "detail"] {
        assert!(
            problem["required"]
                .as_array()
                .unwrap()
                .contains(&Value::from(field)),
            "{field}"
        );
    }
}

/// Where `value` departs from `schema` (resolved in `document`): a key the schema does not
/// have (when it lists its properties), a required key missing, a value of another type or
/// outside its enum. Enough of JSON Schema for what utoipa writes.
fn departures(document: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    if let Some(target) = schema["$ref"].as_str() {
        let name = target.trim_start_matches("#/components/schemas/");
        return departures(
            document,
            &document["components"]["schemas"][name],
            value,
            at,
        );
    }
    if let Some(parts) = schema["allOf"].as_array() {
        // Each part sees only the keys it names; together they must name them all.
        let mut wrong: Vec<String> = Vec::new();
        let mut named = BTreeSet::new();
        for part in parts {
            let part = resolve(document, part);
            let keys = property_names(document, part);
            named.extend(keys.iter().cloned());
            let own = match value {
                Value::Object(map) => Value::Object(
                    map.iter()
                        .filter(|(k, _)| keys.contains(*k))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                ),
                other => other.clone(),
            };
            wrong.extend(departures(document, part, &own, at));
        }
        if let Value::Object(map) = value {
            for key in map.keys().filter(|k| !named.contains(*k)) {
                wrong.push(format!("{at}.{key}: not in the schema"));
            }
        }
        return wrong;
    }
    if let Some(choices) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
        let fits = choices
            .iter()
            .any(|choice| departures(document, choice, value, at).is_empty());
        return if fits {
            vec![]
        } else {
            vec![format!("{at}: fits none of {schema}")]
        };
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let kind = match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    };
    let fits = types.contains(&kind) || (kind == "integer" && types.contains(&"number"));
    if !types.is_empty() && !fits {
        return vec![format!("{at}: a {kind}, documented as {types:?}")];
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return vec![format!("{at}: {value} is not one of {allowed:?}")];
    }
    let mut wrong = Vec::new();
    match value {
        Value::Object(map) => {
            if let Some(properties) = schema["properties"].as_object() {
                for (key, item) in map {
                    match properties.get(key) {
                        Some(property) => wrong.extend(departures(
                            document,
                            property,
                            item,
                            &format!("{at}.{key}"),
                        )),
                        None => wrong.push(format!("{at}.{key}: not in the schema")),
                    }
                }
            }
            for key in schema["required"].as_array().into_iter().flatten() {
                if !map.contains_key(key.as_str().unwrap()) {
                    wrong.push(format!("{at}.{}: required, missing", key.as_str().unwrap()));
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                wrong.extend(departures(
                    document,
                    &schema["items"],
                    item,
                    &format!("{at}[{i}]"),
                ));
            }
        }
        _ => {}
    }
    wrong
}

fn resolve<'a>(document: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(target) => {
            let name = target.trim_start_matches("#/components/schemas/");
            resolve(document, &document["components"]["schemas"][name])
        }
        None => schema,
    }
}

fn property_names(document: &Value, schema: &Value) -> BTreeSet<String> {
    let schema = resolve(document, schema);
    let mut names: BTreeSet<String> = schema["properties"]
        .as_object()
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    for part in schema["allOf"].as_array().into_iter().flatten() {
        names.extend(property_names(document, part));
    }
    names
}

/// Checks an answer of `method path` (a documented template) against the document: its status
/// is documented, and its JSON body has the documented shape for its content type.
async fn conforms(
    document: &Value,
    method: &str,
    template: &str,
    response: reqwest::Response,
) -> Value {
    let status = response.status().as_u16().to_string();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body: Value = response.json().await.expect("a JSON answer");
    let documented = &operation(document, template, method)["responses"][&status];
    assert!(
        documented.is_object(),
        "{method} {template} answered {status}, undocumented: {body}"
    );
    let media = content_type.split(';').next().unwrap().trim();
    let schema = &documented["content"][media]["schema"];
    assert!(
        schema.is_object(),
        "{method} {template} {status}: {media} is not documented"
    );
    let wrong = departures(document, schema, &body, "body");
    assert!(
        wrong.is_empty(),
        "{method} {template} {status}:\n{}\n{body}",
        wrong.join("\n")
    );
    body
}

#[tokio::test]
async fn real_answers_have_the_documented_shapes() {
    use quickdonate::operators::access::{self, Role};
    let app = spawn_app_with(|s| {
        s.stripe_secret_key = None;
        s.stripe_publishable_key = None;
    })
    .await;
    let document: Value = app.get("/openapi.json").await.json().await.unwrap();
    let url = |path: &str| format!("{}{path}", app.address);

    // Public: a donation with Gift Aid, paid, partly refunded, the refund failed, paid out.
    let mut body = crate::helpers::donation_body();
    body["cover_fees"] = true.into();
    body["gift_aid"] = serde_json::json!({"declared": true, "title": "Ms",
                                          "house_name_or_number": "10", "postcode": "s192bd"});
    let created = conforms(
        &document,
        "post",
        "/v1/campaigns/{slug}/donations",
        app.post_donation("kashmir", &body, Some("openapi-shape-1"))
            .await,
    )
    .await;
    let (id, pi) = (
        created["id"].as_str().unwrap().to_owned(),
        created["payment_intent_id"].as_str().unwrap().to_owned(),
    );
    let pi_action = "/v1/simulator/payment_intents/{id}/{action}";
    let post = |path: String, body: Option<Value>| {
        let request = app.http.post(url(&path));
        match body {
            Some(body) => request.json(&body),
            None => request,
        }
        .send()
    };
    conforms(
        &document,
        "post",
        pi_action,
        post(format!("/v1/simulator/payment_intents/{pi}/succeed"), None)
            .await
            .unwrap(),
    )
    .await;
    let refunded = conforms(
        &document,
        "post",
        pi_action,
        post(
            format!("/v1/simulator/payment_intents/{pi}/refund"),
            Some(serde_json::json!({"amount": 100})),
        )
        .await
        .unwrap(),
    )
    .await;
    let refund = refunded["refund"].as_str().unwrap();
    conforms(
        &document,
        "post",
        "/v1/simulator/refunds/{id}/{action}",
        post(format!("/v1/simulator/refunds/{refund}/fail"), None)
            .await
            .unwrap(),
    )
    .await;
    app.wait_until_applied().await;
    let payout = conforms(
        &document,
        "post",
        "/v1/simulator/payouts",
        post("/v1/simulator/payouts".into(), None).await.unwrap(),
    )
    .await;
    let payout_id = payout["payouts"][0]["id"].as_str().unwrap().to_owned();
    app.wait_until_applied().await;

    for (template, path) in [
        ("/v1/campaigns", "/v1/campaigns".to_owned()),
        ("/v1/campaigns/{slug}", "/v1/campaigns/kashmir".to_owned()),
        ("/v1/campaigns/{slug}", "/v1/campaigns/nowhere".to_owned()),
        ("/v1/donations/{id}", format!("/v1/donations/{id}")),
    ] {
        conforms(&document, "get", template, app.get(&path).await).await;
    }
    // Problems: a 422 naming its fields, a 415.
    let mut bad = crate::helpers::donation_body();
    bad["amount"] = 1.into();
    bad["donor"]["email"] = "nobody".into();
    let path = "/v1/campaigns/{slug}/donations";
    conforms(
        &document,
        "post",
        path,
        app.post_donation("kashmir", &bad, None).await,
    )
    .await;
    let unsupported = app
        .http
        .post(url("/v1/campaigns/kashmir/donations"))
        .body("{}")
        .send();
    conforms(&document, "post", path, unsupported.await.unwrap()).await;
    let webhook = app.http.post(url("/v1/webhooks/stripe")).body("{}").send();
    conforms(
        &document,
        "post",
        "/v1/webhooks/stripe",
        webhook.await.unwrap(),
    )
    .await;

    // Finance, as an admin.
    let token = access::create(&app.db, "openapi", Role::Admin)
        .await
        .unwrap();
    let get = |path: String| app.http.get(url(&path)).bearer_auth(&token).send();
    let a_year = "from=2020-01-01T00:00:00Z&to=2100-01-01T00:00:00Z";
    for (template, path) in [
        ("/v1/finance/donations", "/v1/finance/donations".to_owned()),
        (
            "/v1/finance/donations",
            "/v1/finance/donations?campaign=nowhere".to_owned(),
        ),
        (
            "/v1/finance/donations",
            "/v1/finance/donations?campiagn=kashmir".to_owned(),
        ),
        ("/v1/finance/audit", "/v1/finance/audit?limit=2".to_owned()),
        ("/v1/finance/payouts", "/v1/finance/payouts".to_owned()),
        (
            "/v1/finance/payouts/{id}",
            format!("/v1/finance/payouts/{payout_id}"),
        ),
        (
            "/v1/finance/payouts/overdue-donations",
            "/v1/finance/payouts/overdue-donations?days=0".to_owned(),
        ),
        (
            "/v1/finance/campaigns/{slug}/summary",
            "/v1/finance/campaigns/kashmir/summary".to_owned(),
        ),
        (
            "/v1/finance/gift-aid/schedule",
            format!("/v1/finance/gift-aid/schedule?{a_year}"),
        ),
    ] {
        conforms(&document, "get", template, get(path).await.unwrap()).await;
    }
    let unauthorized = app.http.get(url("/v1/finance/payouts")).send();
    conforms(
        &document,
        "get",
        "/v1/finance/payouts",
        unauthorized.await.unwrap(),
    )
    .await;
    let claim = app
        .http
        .post(url("/v1/finance/gift-aid/claims"))
        .bearer_auth(&token)
        .json(&serde_json::json!({"from": "2020-01-01T00:00:00Z", "to": "2100-01-01T00:00:00Z"}))
        .send();
    let claim = conforms(
        &document,
        "post",
        "/v1/finance/gift-aid/claims",
        claim.await.unwrap(),
    )
    .await;
    let claim_id = claim["id"].as_str().expect("a claim was made").to_owned();
    let shown = get(format!("/v1/finance/gift-aid/claims/{claim_id}"))
        .await
        .unwrap();
    let shown = conforms(&document, "get", "/v1/finance/gift-aid/claims/{id}", shown).await;
    assert!(!shown["rows"].as_array().unwrap().is_empty(), "{shown}");
}
