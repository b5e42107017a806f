//! Streaming Encrypt/Decrypt (KMIP 1.3+ Init Indicator, Final Indicator,
//! Correlation Value): AES-GCM fed in parts across requests. Each stream
//! belongs to the client identity and object that started it; streams are
//! bounded in number and dropped when idle.

use keyhold_crypto::gcm::GcmStream;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Streams open at once, in all and per client identity.
const MAX_STREAMS: usize = 1024;
const MAX_PER_IDENTITY: usize = 64;
/// A stream with no request for this long is dropped.
const IDLE: Duration = Duration::from_secs(300);

/// One encryption or decryption in progress.
pub(crate) struct Stream {
    pub identity: String,
    pub uid: String,
    pub encrypt: bool,
    pub tag_len: usize,
    pub gcm: GcmStream,
    last_used: Instant,
}

impl Stream {
    pub(crate) fn new(
        identity: &str,
        uid: &str,
        encrypt: bool,
        tag_len: usize,
        gcm: GcmStream,
    ) -> Self {
        Self {
            identity: identity.to_owned(),
            uid: uid.to_owned(),
            encrypt,
            tag_len,
            gcm,
            last_used: Instant::now(),
        }
    }
}

/// Why a stream cannot be had.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum StreamError {
    /// No such Correlation Value (never made, finished, dropped when idle,
    /// or another identity's or object's).
    Unknown,
    /// Too many streams open.
    Full,
}

#[derive(Default)]
pub(crate) struct Streams {
    open: Mutex<HashMap<Vec<u8>, Stream>>,
}

impl Streams {
    /// Opens `s`; returns its Correlation Value.
    pub(crate) fn open(&self, s: Stream) -> Result<Vec<u8>, StreamError> {
        let mut cv = vec![0u8; 16];
        keyhold_crypto::fill_random(&mut cv).map_err(|_| StreamError::Full)?;
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, s| s.last_used.elapsed() < IDLE);
        let mine = open.values().filter(|o| o.identity == s.identity).count();
        if open.len() >= MAX_STREAMS || mine >= MAX_PER_IDENTITY {
            return Err(StreamError::Full);
        }
        open.insert(cv.clone(), s);
        Ok(cv)
    }

    /// Takes the stream `cv` of `identity` on object `uid` out (to be put
    /// back unless it ends).
    pub(crate) fn take(&self, cv: &[u8], identity: &str, uid: &str) -> Result<Stream, StreamError> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        match open.get(cv) {
            Some(s) if s.identity == identity && s.uid == uid && s.last_used.elapsed() < IDLE => {
                Ok(open.remove(cv).expect("just seen"))
            }
            Some(s) if s.last_used.elapsed() >= IDLE => {
                open.remove(cv);
                Err(StreamError::Unknown)
            }
            _ => Err(StreamError::Unknown),
        }
    }

    /// Puts a stream taken with [`Streams::take`] back.
    pub(crate) fn put_back(&self, cv: Vec<u8>, mut s: Stream) {
        s.last_used = Instant::now();
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(cv, s);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.open.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(identity: &str) -> Stream {
        let gcm = GcmStream::new(&[0; 16], &[0; 12], &[], true).unwrap();
        Stream::new(identity, "uid-1", true, 16, gcm)
    }

    #[test]
    fn streams_belong_to_their_identity_and_object_and_are_bounded() {
        let s = Streams::default();
        let cv = s.open(stream("alice")).unwrap();
        assert_eq!(
            s.take(&cv, "bob", "uid-1").err(),
            Some(StreamError::Unknown)
        );
        assert_eq!(
            s.take(&cv, "alice", "uid-2").err(),
            Some(StreamError::Unknown)
        );
        assert_eq!(
            s.take(b"nope", "alice", "uid-1").err(),
            Some(StreamError::Unknown)
        );
        let taken = s.take(&cv, "alice", "uid-1").unwrap();
        assert_eq!(s.len(), 0);
        s.put_back(cv.clone(), taken);
        assert_eq!(s.len(), 1);
        for _ in 1..MAX_PER_IDENTITY {
            s.open(stream("alice")).unwrap();
        }
        assert_eq!(s.open(stream("alice")).err(), Some(StreamError::Full));
        s.open(stream("bob")).unwrap();
    }
}
