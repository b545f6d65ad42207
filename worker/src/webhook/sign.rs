//! What a completion webhook carries: its body (the job's result with its id, queue, tenant and
//! status) and its `Quayside-Signature` header.

use ring::hmac;

/// The JSON body of a job's webhook: `{"id", "queue", "tenant", "status", "result"}`, where
/// `result` is the job's result exactly as `GET /v1/jobs/{id}` shows it and `tenant` is
/// `default` for jobs without one.
pub fn body(job_id: &str, queue: &str, tenant: Option<&str>, result: &str) -> String {
    let result: serde_json::Value =
        serde_json::from_str(result).unwrap_or_else(|_| serde_json::Value::String(result.into()));
    let status = result
        .get("status")
        .cloned()
        .unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "id": job_id,
        "queue": queue,
        "tenant": tenant.unwrap_or(quayside_common::config::DEFAULT_LABEL),
        "status": status,
        "result": result,
    })
    .to_string()
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: the receiver recomputes the
/// MAC over the timestamp and the raw body, compares in constant time, and refuses old `t`.
pub fn signature(secret: &[u8], unix_s: u64, body: &str) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret);
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(unix_s.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body.as_bytes());
    let mac = ctx.sign();
    let hex: String = mac.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    format!("t={unix_s},v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_time_dot_body() {
        // Computed independently: Python's hmac.new(b"whsec", b"1700000000.{}", sha256).
        assert_eq!(
            signature(b"whsec", 1_700_000_000, "{}"),
            "t=1700000000,v1=7d44587dddbaf4c7f70fef20f48cd594834ffea1641e3ac227b84408298738af"
        );
    }

    #[test]
    fn the_body_carries_id_queue_tenant_status_and_the_result() {
        let b = body("j1", "builds", None, r#"{"id":"j1","status":"succeeded"}"#);
        let v: serde_json::Value = serde_json::from_str(&b).expect("json");
        assert_eq!(v["tenant"], "default");
        assert_eq!(v["status"], "succeeded");
        assert_eq!(v["queue"], "builds");
        assert_eq!(v["result"]["id"], "j1");
    }
}
