//! Console sessions: an admin token, presented once at sign-in, is
//! exchanged for a session whose id travels only in an HttpOnly, Secure,
//! SameSite=Strict cookie. The token itself is never kept, here or in the
//! browser. Sessions live in this process's memory (a restart signs
//! everyone out), expire after an idle spell and a longer absolute one,
//! and are bounded in number. Each has its own CSRF token, which every
//! change must carry.

use keyhold_crypto::{ct_eq, random_secret};
use keyhold_service::api_tokens::AdminIdentity;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A session unused this long is over.
pub const IDLE: Duration = Duration::from_secs(15 * 60);
/// A session is over this long after sign-in, however busy.
pub const ABSOLUTE: Duration = Duration::from_secs(8 * 60 * 60);
/// Sessions at most (the oldest goes when a new one would pass this).
const MAX_SESSIONS: usize = 1_000;
/// The cookie's name.
pub const COOKIE: &str = "keyhold_console";

/// One signed-in user.
#[derive(Clone)]
pub struct Session {
    pub who: AdminIdentity,
    /// What every change form carries back.
    pub csrf: String,
    started: Instant,
    last_seen: Instant,
}

/// The sessions of this process, by the SHA-256 of their id (the id itself
/// is not kept: a memory dump gives no cookie).
pub struct Sessions {
    by_id: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
}

fn random_text() -> String {
    use base64::Engine as _;
    let r = random_secret(32).expect("the system RNG works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r.expose())
}

fn key_of(id: &str) -> [u8; 32] {
    keyhold_crypto::sha256(&[b"keyhold console session\0", id.as_bytes()])
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(IDLE)
    }
}

impl Sessions {
    pub fn new(idle: Duration) -> Self {
        Self {
            by_id: Mutex::new(HashMap::new()),
            idle,
        }
    }

    /// Starts a session for `who`; returns its id (the cookie's value).
    pub fn start(&self, who: AdminIdentity) -> String {
        let id = random_text();
        let now = Instant::now();
        let mut all = self.by_id.lock();
        self.expire(&mut all, now);
        if all.len() >= MAX_SESSIONS {
            if let Some(oldest) = all.iter().min_by_key(|(_, s)| s.last_seen).map(|(k, _)| *k) {
                all.remove(&oldest);
            }
        }
        all.insert(
            key_of(&id),
            Session {
                who,
                csrf: random_text(),
                started: now,
                last_seen: now,
            },
        );
        id
    }

    /// The live session with this id (its idle clock restarted).
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut all = self.by_id.lock();
        let k = key_of(id);
        let s = all.get_mut(&k)?;
        if now.duration_since(s.last_seen) > self.idle || now.duration_since(s.started) > ABSOLUTE {
            all.remove(&k);
            return None;
        }
        s.last_seen = now;
        Some(s.clone())
    }

    /// Ends the session with this id.
    pub fn end(&self, id: &str) {
        self.by_id.lock().remove(&key_of(id));
    }

    /// Ends every session of a token (revoked, or no longer valid).
    pub fn end_token(&self, token_id: &str) {
        self.by_id.lock().retain(|_, s| s.who.token_id != token_id);
    }

    fn expire(&self, all: &mut HashMap<[u8; 32], Session>, now: Instant) {
        all.retain(|_, s| {
            now.duration_since(s.last_seen) <= self.idle
                && now.duration_since(s.started) <= ABSOLUTE
        });
    }

    pub fn len(&self) -> usize {
        self.by_id.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Session {
    /// Whether a form's CSRF field is this session's (in constant time).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        ct_eq(self.csrf.as_bytes(), presented.as_bytes())
    }
}

/// The session cookie's value in a `Cookie` header.
pub fn cookie_value(headers: &hyper::HeaderMap) -> Option<String> {
    headers
        .get_all(hyper::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_owned())
}

/// The `Set-Cookie` of a new session (Path=/ui: the API never sees it).
pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; Secure; SameSite=Strict; Max-Age={}",
        ABSOLUTE.as_secs()
    )
}

/// The `Set-Cookie` that removes it.
pub fn clear_cookie() -> String {
    format!("{COOKIE}=; Path=/ui; HttpOnly; Secure; SameSite=Strict; Max-Age=0")
}

#[cfg(test)]
mod tests {
    use super::*;
    use keyhold_service::api_tokens::Role;

    fn who(token: &str) -> AdminIdentity {
        AdminIdentity {
            name: "alice".into(),
            role: Role::Custodian,
            token_id: token.into(),
        }
    }

    #[test]
    fn sessions_start_expire_and_end() {
        let s = Sessions::new(Duration::from_millis(0));
        let id = s.start(who("t1"));
        // Idle for longer than zero: over.
        std::thread::sleep(Duration::from_millis(2));
        assert!(s.get(&id).is_none());

        let s = Sessions::default();
        let id = s.start(who("t1"));
        let other = s.start(who("t2"));
        let got = s.get(&id).unwrap();
        assert!(got.csrf_matches(&got.csrf));
        assert!(!got.csrf_matches("forged"));
        assert!(s.get("not-an-id").is_none());
        s.end_token("t1");
        assert!(s.get(&id).is_none());
        assert!(s.get(&other).is_some());
        s.end(&other);
        assert!(s.is_empty());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut h = hyper::HeaderMap::new();
        h.insert(
            hyper::header::COOKIE,
            "a=1; keyhold_console=abc; b=2".parse().unwrap(),
        );
        assert_eq!(cookie_value(&h).as_deref(), Some("abc"));
        assert!(set_cookie("x").contains("HttpOnly; Secure; SameSite=Strict"));
    }

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::default();
        for i in 0..(MAX_SESSIONS + 10) {
            s.start(who(&format!("t{i}")));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
    }
}
