//! The OpenAPI 3.0 document of the gateway, `docs/openapi.json`, served at `/openapi.json`. It
//! is written by hand; the tests below keep it and the router in step.

use axum::http::header;
use axum::response::IntoResponse;

/// The document, as kept in the repository.
pub const DOCUMENT: &str = include_str!("../../../docs/openapi.json");

pub(super) async fn serve() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], DOCUMENT)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use serde_json::Value;

    use super::*;

    fn doc() -> Value {
        serde_json::from_str(DOCUMENT).expect("docs/openapi.json is JSON")
    }

    #[test]
    fn every_route_is_documented_and_every_documented_route_is_served() {
        let doc = doc();
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("path item").keys() {
                if ["get", "post", "delete", "put", "patch"].contains(&method.as_str()) {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let served: BTreeSet<_> = super::super::routes()
            .into_iter()
            .map(|(m, p)| (m.to_owned(), p.to_owned()))
            .collect();
        assert_eq!(documented, served);
    }

    #[test]
    fn example_bodies_are_accepted() {
        let doc = doc();
        let cfg = quayside_common::config::Config::load(None).expect("defaults");
        let mut seen = 0;
        for (path, item) in doc["paths"].as_object().expect("paths") {
            let Some(examples) =
                item["post"]["requestBody"]["content"]["application/json"]["examples"].as_object()
            else {
                continue;
            };
            for (name, ex) in examples {
                let value = ex["value"].clone();
                let outcome = match path.as_str() {
                    "/v1/jobs" => super::super::body::job(value, "", &cfg, None).map(drop),
                    "/v1/batches" => super::super::batches::check(value, &cfg, None).map(drop),
                    other => panic!("no check for {other}"),
                };
                if let Err(e) = outcome {
                    panic!("{path} example {name}: {}", e.body.message);
                }
                seen += 1;
            }
        }
        assert!(seen >= 3, "only {seen} examples");
    }

    #[test]
    fn every_reference_resolves() {
        fn walk(v: &Value, doc: &Value) {
            match v {
                Value::Object(m) => {
                    if let Some(Value::String(r)) = m.get("$ref") {
                        let ptr = r.trim_start_matches('#');
                        assert!(doc.pointer(ptr).is_some(), "dangling {r}");
                    }
                    m.values().for_each(|x| walk(x, doc));
                }
                Value::Array(a) => a.iter().for_each(|x| walk(x, doc)),
                _ => {}
            }
        }
        let d = doc();
        walk(&d, &d);
    }
}
