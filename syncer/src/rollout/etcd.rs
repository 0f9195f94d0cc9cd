//! A small, synchronous etcd v3 client over etcd's gRPC-JSON gateway (HTTP POST of JSON
//! to `/v3/kv/*`, `/v3/lease/*`, `/v3/watch`; keys and values base64), for the rollout's
//! fleet record ([`super::fleet`]).
//!
//! Why not the `etcd-client` crate: it needs tokio, tonic, prost and protoc at build time
//! in a controller that is synchronous everywhere else, on 2-core build machines. The
//! gateway is etcd's documented and stable API (served on the client port since 3.3), and
//! `ureq` is already the agent's HTTP client, so the controller gains no crate.
//!
//! The client is given every member's address and fails over between them: a request
//! that cannot reach one member (refused, reset, timed out, 5xx) is sent to the next, so
//! a rollout goes on while one member of three is down. Only when no member answers does
//! a call fail, with [`EtcdError::Unreachable`], which callers treat as "wait for etcd".

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// What went wrong talking to etcd; every error names what was being done.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    /// No member answered (each member's error is listed).
    #[error("etcd unreachable while trying to {action}: {errors}")]
    Unreachable {
        /// What the request was for ("read /fleet/r1/meta", "grant a lease").
        action: String,
        /// Every endpoint with its error.
        errors: String,
    },
    /// A member answered with an error, or with something that is not etcd's JSON.
    #[error("etcd at {endpoint} refused to {action}: {message}")]
    Refused {
        /// The member that answered.
        endpoint: String,
        /// What the request was for.
        action: String,
        /// Its status and message.
        message: String,
    },
    /// An `etcd://` address that cannot be used.
    #[error("bad etcd address {0}")]
    Address(String),
}

/// Short for results of this module.
pub type EResult<T> = std::result::Result<T, EtcdError>;

/// One key as etcd returns it.
#[derive(Debug, Clone)]
pub struct Kv {
    /// The key, decoded.
    pub key: String,
    /// The value, decoded.
    pub value: Vec<u8>,
    /// The revision the key was created at: a compare on 0 means "absent".
    pub create_revision: i64,
    /// The revision of its last change: compare-and-swap on it.
    pub mod_revision: i64,
    /// The lease it is attached to (0: none).
    pub lease: i64,
}

/// One comparison of a transaction.
pub enum Cmp<'a> {
    /// The key does not exist.
    Absent(&'a str),
    /// The key exists and was last changed at this revision.
    ModRev(&'a str, i64),
    /// The key holds exactly this value.
    Value(&'a str, &'a [u8]),
}

/// One operation of a transaction.
pub enum Op<'a> {
    /// Put a key, under a lease (0: none).
    Put(&'a str, &'a [u8], i64),
    /// Delete a key.
    Delete(&'a str),
    /// Read every key under a prefix.
    Range(&'a str),
    /// Read one key.
    Get(&'a str),
}

/// A client for one etcd cluster.
pub struct Client {
    /// `http://host:port` of each member, as given.
    endpoints: Vec<String>,
    /// The member that answered last: tried first.
    current: AtomicUsize,
    http: ureq::Agent,
}

/// An address `etcd://H:P[,H:P...]/PREFIX` split: members and the rollout's prefix (no
/// trailing slash, starting with one).
pub fn parse_url(url: &str) -> EResult<(Vec<String>, String)> {
    let bad = |why: &str| EtcdError::Address(format!("{url:?}: {why}"));
    let rest = url
        .strip_prefix("etcd://")
        .ok_or_else(|| bad("it must start with etcd://"))?;
    let (hosts, prefix) = rest
        .split_once('/')
        .ok_or_else(|| bad("give a prefix after the members: etcd://H:P/fleet/rollout"))?;
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return Err(bad("the prefix is empty"));
    }
    let mut endpoints = Vec::new();
    for h in hosts.split(',') {
        if h.is_empty() || !h.contains(':') || h.contains(['/', '@', '?', '#']) {
            return Err(bad(&format!("member {h:?}: use HOST:PORT")));
        }
        endpoints.push(format!("http://{h}"));
    }
    Ok((endpoints, format!("/{prefix}")))
}

/// The end of the key range holding every key that starts with `prefix` (etcd's
/// `range_end`): the prefix with its last byte incremented.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn b64(b: &[u8]) -> String {
    B64.encode(b)
}

/// etcd's JSON writes 64-bit integers as strings, and leaves zeros out.
fn int(v: &Value) -> i64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn kvs(v: &Value) -> Vec<Kv> {
    let Some(list) = v.get("kvs").and_then(Value::as_array) else {
        return Vec::new();
    };
    let dec = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|s| B64.decode(s).ok())
            .unwrap_or_default()
    };
    list.iter()
        .map(|kv| Kv {
            key: String::from_utf8_lossy(&dec(kv.get("key"))).into_owned(),
            value: dec(kv.get("value")),
            create_revision: int(&kv["create_revision"]),
            mod_revision: int(&kv["mod_revision"]),
            lease: int(&kv["lease"]),
        })
        .collect()
}

impl Client {
    /// A client for the members of `etcd://...`; nothing is sent yet. `timeout` bounds
    /// each request to one member, so that a member gone silent is failed over quickly.
    pub fn new(endpoints: Vec<String>, timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_connect(Some(timeout))
            .timeout_recv_response(Some(timeout))
            .timeout_per_read(Some(timeout))
            .build();
        Client {
            endpoints,
            current: AtomicUsize::new(0),
            http: ureq::Agent::new_with_config(config),
        }
    }

    /// The members, as `H:P,H:P` (for messages).
    pub fn members(&self) -> String {
        self.endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// POSTs `body` to `path` on the members in turn, from the one that answered last,
    /// until one answers; its JSON answer.
    fn call(&self, path: &str, body: &Value, action: &str) -> EResult<Value> {
        let text = body.to_string();
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for i in 0..n {
            let at = (first + i) % n;
            let ep = &self.endpoints[at];
            let resp = self
                .http
                .post(format!("{ep}{path}"))
                .header("content-type", "application/json")
                .send(text.as_bytes());
            let mut resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    errors.push(format!("{ep}: {e}"));
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let answer = resp.body_mut().read_to_string();
            // A member without a quorum or restarting answers 5xx: another may do.
            if status >= 500 {
                errors.push(format!(
                    "{ep}: HTTP {status}: {}",
                    answer.unwrap_or_default()
                ));
                continue;
            }
            let refused = |message: String| EtcdError::Refused {
                endpoint: ep.clone(),
                action: action.to_string(),
                message,
            };
            let answer = answer.map_err(|e| refused(e.to_string()))?;
            let v: Value = serde_json::from_str(&answer)
                .map_err(|e| refused(format!("not JSON ({e}): {answer}")))?;
            if status != 200 || v.get("error").is_some() || v.get("code").is_some() {
                return Err(refused(format!("HTTP {status}: {answer}")));
            }
            self.current.store(at, Ordering::Relaxed);
            return Ok(v);
        }
        Err(EtcdError::Unreachable {
            action: action.to_string(),
            errors: errors.join("; "),
        })
    }

    /// The key, if it exists.
    pub fn get(&self, key: &str) -> EResult<Option<Kv>> {
        let v = self.call(
            "/v3/kv/range",
            &json!({"key": b64(key.as_bytes())}),
            &format!("read {key}"),
        )?;
        Ok(kvs(&v).into_iter().next())
    }

    /// Every key under `prefix`, in key order, and the store's revision they were read at.
    pub fn range(&self, prefix: &str) -> EResult<(Vec<Kv>, i64)> {
        let v = self.call(
            "/v3/kv/range",
            &json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix))}),
            &format!("read the keys under {prefix}"),
        )?;
        Ok((kvs(&v), int(&v["header"]["revision"])))
    }

    /// Applies `ops` when every comparison holds, `otherwise` when one does not, in one
    /// transaction: whether the comparisons held, and what the `Range`s read.
    pub fn txn(
        &self,
        cmp: &[Cmp],
        ops: &[Op],
        otherwise: &[Op],
        action: &str,
    ) -> EResult<(bool, Vec<Kv>)> {
        let compare: Vec<Value> = cmp
            .iter()
            .map(|c| match c {
                Cmp::Absent(k) => json!({"target": "CREATE", "key": b64(k.as_bytes()), "create_revision": "0"}),
                Cmp::ModRev(k, r) => json!({"target": "MOD", "key": b64(k.as_bytes()), "mod_revision": r.to_string()}),
                Cmp::Value(k, v) => json!({"target": "VALUE", "key": b64(k.as_bytes()), "value": b64(v)}),
            })
            .collect();
        let ops_json = |ops: &[Op]| -> Vec<Value> {
            ops.iter()
                .map(|o| match o {
                    Op::Put(k, v, lease) => json!({"request_put": {"key": b64(k.as_bytes()), "value": b64(v), "lease": lease.to_string()}}),
                    Op::Delete(k) => json!({"request_delete_range": {"key": b64(k.as_bytes())}}),
                    Op::Range(p) => json!({"request_range": {"key": b64(p.as_bytes()), "range_end": b64(&prefix_end(p))}}),
                    Op::Get(k) => json!({"request_range": {"key": b64(k.as_bytes())}}),
                })
                .collect()
        };
        let body =
            json!({"compare": compare, "success": ops_json(ops), "failure": ops_json(otherwise)});
        let v = self.call("/v3/kv/txn", &body, action)?;
        let ok = v.get("succeeded").and_then(Value::as_bool).unwrap_or(false);
        let read = v
            .get("responses")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|r| r.get("response_range"))
            .flat_map(kvs)
            .collect();
        Ok((ok, read))
    }

    /// Puts one key (under `lease`, 0 for none).
    pub fn put(&self, key: &str, value: &[u8], lease: i64) -> EResult<()> {
        self.txn(
            &[],
            &[Op::Put(key, value, lease)],
            &[],
            &format!("write {key}"),
        )
        .map(|_| ())
    }

    /// Deletes every key under `prefix`; how many there were.
    pub fn delete_prefix(&self, prefix: &str) -> EResult<i64> {
        let v = self.call(
            "/v3/kv/deleterange",
            &json!({"key": b64(prefix.as_bytes()), "range_end": b64(&prefix_end(prefix))}),
            &format!("delete the keys under {prefix}"),
        )?;
        Ok(int(&v["deleted"]))
    }

    /// A new lease of `ttl` seconds: its ID.
    pub fn grant(&self, ttl: u64) -> EResult<i64> {
        let v = self.call(
            "/v3/lease/grant",
            &json!({"TTL": ttl.to_string()}),
            "grant a lease",
        )?;
        Ok(int(&v["ID"]))
    }

    /// Renews the lease; false when it had already expired (its keys are gone).
    pub fn keepalive(&self, id: i64) -> EResult<bool> {
        let v = self.call(
            "/v3/lease/keepalive",
            &json!({"ID": id.to_string()}),
            &format!("renew lease {id:x}"),
        )?;
        Ok(int(&v["result"]["TTL"]) > 0)
    }

    /// Ends the lease now, deleting its keys.
    pub fn revoke(&self, id: i64) -> EResult<()> {
        self.call(
            "/v3/lease/revoke",
            &json!({"ID": id.to_string()}),
            &format!("revoke lease {id:x}"),
        )
        .map(|_| ())
    }

    /// Blocks until a key under `prefix` changes after `revision` (or the member's stream
    /// ends, or `wait` passes with nothing: the caller reads the keys again either way).
    /// Callers read, decide, and watch from the revision they read at, so no change
    /// between the read and the watch is missed.
    pub fn watch(&self, prefix: &str, revision: i64, wait: Duration) -> EResult<()> {
        let body = json!({"create_request": {
            "key": b64(prefix.as_bytes()),
            "range_end": b64(&prefix_end(prefix)),
            "start_revision": (revision + 1).to_string(),
        }});
        let n = self.endpoints.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut errors = Vec::new();
        for i in 0..n {
            let ep = &self.endpoints[(first + i) % n];
            let resp = self
                .http
                .post(format!("{ep}/v3/watch"))
                .config()
                .timeout_per_read(Some(wait))
                .timeout_recv_response(Some(wait))
                .build()
                .send(body.to_string().as_bytes());
            let resp = match resp {
                Ok(r) if r.status().as_u16() == 200 => r,
                Ok(r) => {
                    errors.push(format!("{ep}: HTTP {}", r.status()));
                    continue;
                }
                Err(e) => {
                    errors.push(format!("{ep}: {e}"));
                    continue;
                }
            };
            let reader = BufReader::new(resp.into_body().into_reader());
            for line in reader.lines() {
                let Ok(line) = line else {
                    // Timed out or cut: the caller reads again.
                    return Ok(());
                };
                let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
                let r = &v["result"];
                if r.get("events")
                    .is_some_and(|e| e.as_array().is_some_and(|a| !a.is_empty()))
                    || r.get("canceled").is_some()
                    || r.get("compact_revision").is_some()
                    || v.get("error").is_some()
                {
                    return Ok(());
                }
            }
            return Ok(());
        }
        Err(EtcdError::Unreachable {
            action: format!("watch {prefix}"),
            errors: errors.join("; "),
        })
    }
}
