//! FIPS mode: what a build with the `fips` feature promises and checks.
//!
//! A FIPS build links aws-lc-rs's FIPS module (AWS-LC-FIPS, built by
//! `aws-lc-fips-sys`) instead of the default AWS-LC, and is in FIPS mode
//! from its first instruction to its last: there is no switch at run time.
//! In it every operation outside the module's approved services is refused
//! with [`NotApproved`], through the one question [`check`] answers, asked
//! before the operation by the code that would do it (KMIP's ciphers and
//! signatures, the software root's passphrase KDF, every TLS listener and
//! client through [`check_tls`]).
//! The default build approves everything (the question is still asked, so
//! both builds take the same paths).

/// Whether this binary was built with the `fips` feature.
pub const BUILD: bool = cfg!(feature = "fips");

/// PBKDF2-HMAC-SHA-256 iterations for a passphrase in FIPS mode (NIST SP
/// 800-132 asks for as many as users tolerate; OWASP's 2023 figure).
pub const PBKDF2_ITERATIONS: u32 = 600_000;

/// What the module says about itself, for `keyhold --version`, `status`
/// and the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FipsStatus {
    /// A FIPS build (the `fips` feature).
    pub build: bool,
    /// The module reports FIPS mode now (`FIPS_mode()`), which it does only
    /// after its power-on self-tests passed.
    pub module_fips_mode: bool,
    /// The AWS-LC version linked (the FIPS module's in a FIPS build), e.g.
    /// "4.2.0".
    pub awslc_version: String,
    /// The FIPS branch of the module (e.g. 4 for AWS-LC-FIPS 4.x), in a
    /// FIPS build.
    pub fips_branch: Option<u32>,
}

impl FipsStatus {
    /// One line for `--version`.
    pub fn line(&self) -> String {
        match (self.build, self.module_fips_mode) {
            (true, true) => format!(
                "FIPS build: AWS-LC-FIPS {} module (FIPS branch {}), FIPS mode on (self-tests passed)",
                self.awslc_version,
                self.fips_branch
                    .map(|b| format!("{b}.x"))
                    .unwrap_or_else(|| "unknown".into()),
            ),
            (true, false) => format!(
                "FIPS build: AWS-LC {} module NOT in FIPS mode",
                self.awslc_version
            ),
            (false, _) => format!(
                "not a FIPS build (AWS-LC {}; build with --features fips for FIPS mode)",
                self.awslc_version
            ),
        }
    }
}

/// The rustls crypto provider of this build: aws-lc-rs's, or in a FIPS
/// build its FIPS provider (no X25519, no ChaCha20-Poly1305), which every
/// TLS listener and client of Keyhold starts from.
pub fn tls_provider() -> rustls::crypto::CryptoProvider {
    #[cfg(feature = "fips")]
    {
        rustls::crypto::default_fips_provider()
    }
    #[cfg(not(feature = "fips"))]
    {
        rustls::crypto::aws_lc_rs::default_provider()
    }
}

/// `suites` without those FIPS mode does not allow (none in a default
/// build).
pub fn tls_suites(suites: Vec<rustls::SupportedCipherSuite>) -> Vec<rustls::SupportedCipherSuite> {
    suites
        .into_iter()
        .filter(|s| !enabled() || s.fips())
        .collect()
}

/// In FIPS mode, checks that a TLS configuration is FIPS-compliant as
/// rustls judges it (the provider's algorithms and the TLS settings NIST
/// asks for, such as extended master secret): `what` names the listener
/// or client in the error.
pub fn check_tls(what: &str, fips: bool) -> Result<(), String> {
    if enabled() && !fips {
        return Err(format!(
            "the TLS configuration of {what} is not FIPS-compliant; refusing to start in FIPS mode"
        ));
    }
    Ok(())
}

/// The module's status now.
pub fn status() -> FipsStatus {
    FipsStatus {
        build: BUILD,
        module_fips_mode: aws_lc_rs::try_fips_mode().is_ok(),
        awslc_version: aws_lc_rs::awslc_version().to_owned(),
        fips_branch: if BUILD {
            aws_lc_rs::fips_version()
        } else {
            None
        },
    }
}

/// Whether this process runs in FIPS mode (a FIPS build; its module's mode
/// is checked by [`startup_check`]).
pub fn enabled() -> bool {
    BUILD
}

/// The check at start: in a FIPS build the module must report FIPS mode,
/// which AWS-LC-FIPS does only once its power-on self-tests passed (a
/// failing self-test aborts the process inside the module). A default
/// build passes.
pub fn startup_check() -> Result<(), String> {
    if !BUILD {
        return Ok(());
    }
    aws_lc_rs::try_fips_mode().map_err(|e| {
        format!("this is a FIPS build but the cryptographic module is not in FIPS mode ({e}): its power-on self-tests did not pass; refusing to start")
    })
}

/// An algorithm or use that FIPS mode refuses, with why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is not allowed in FIPS mode: {why}")]
pub struct NotApproved {
    pub what: String,
    pub why: &'static str,
}

/// The uses FIPS mode looks at: each is allowed in a default build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Use {
    /// ChaCha20 or ChaCha20-Poly1305: a key, an encryption or decryption.
    ChaCha20,
    /// Triple DES encryption.
    TripleDesEncrypt,
    /// A new Triple DES key made here (one from elsewhere may come in, to
    /// decrypt).
    TripleDesNewKey,
    /// Triple DES decryption of existing data (allowed: migration).
    TripleDesDecrypt,
    /// AES-GCM with an IV that is not 96 bits, or fed in parts: GHASH
    /// outside the module.
    GcmOutsideModule,
    /// A signature made with SHA-1.
    Sha1Signature,
    /// An RSA key of this many bits, new.
    RsaKeyBits(u32),
    /// A passphrase key derived with Argon2id.
    Argon2id,
}

/// Whether `u` is allowed in this build; in FIPS mode, the refusal.
pub fn check(u: Use) -> Result<(), NotApproved> {
    if !enabled() {
        return Ok(());
    }
    refusal(u).map_or(Ok(()), Err)
}

/// What FIPS mode says to `u` (`None`: allowed), whichever the build.
pub fn refusal(u: Use) -> Option<NotApproved> {
    let (what, why) = match u {
        Use::ChaCha20 => (
            "ChaCha20".to_owned(),
            "not an approved algorithm (use AES)",
        ),
        Use::TripleDesEncrypt => (
            "Triple DES encryption".to_owned(),
            "disallowed by NIST SP 800-131A since 2024 (decryption of existing data stays, for migration)",
        ),
        Use::TripleDesNewKey => (
            "a new Triple DES key".to_owned(),
            "Triple DES encryption is disallowed by NIST SP 800-131A since 2024 (an existing key may be registered, to decrypt)",
        ),
        Use::GcmOutsideModule => (
            "AES-GCM with an IV other than 96 bits, or in parts".to_owned(),
            "the validated module does only one-shot AES-GCM with 96-bit IVs",
        ),
        Use::Sha1Signature => (
            "a signature with SHA-1".to_owned(),
            "disallowed by NIST SP 800-131A for new signatures (verification stays)",
        ),
        Use::RsaKeyBits(bits) if bits < 2048 => (
            format!("an RSA key of {bits} bits"),
            "RSA keys must have at least 2048 bits",
        ),
        Use::Argon2id => (
            "Argon2id".to_owned(),
            "not an approved key derivation (FIPS mode seals with PBKDF2-HMAC-SHA-256)",
        ),
        Use::TripleDesDecrypt | Use::RsaKeyBits(_) => return None,
    };
    Some(NotApproved { what, why })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_build_and_the_module_agree() {
        let s = status();
        assert_eq!(s.build, BUILD);
        assert!(!s.awslc_version.is_empty());
        assert_eq!(s.module_fips_mode, BUILD, "{s:?}");
        assert!(startup_check().is_ok());
        assert!(s.line().contains(if BUILD {
            "FIPS mode on"
        } else {
            "not a FIPS build"
        }));
    }

    #[test]
    fn tls_configurations_are_fips_in_a_fips_build() {
        let p = std::sync::Arc::new(tls_provider());
        assert_eq!(p.fips(), BUILD);
        let cfg = rustls::ClientConfig::builder_with_provider(p)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        assert_eq!(cfg.fips(), BUILD);
        assert!(check_tls("x", cfg.fips()).is_ok());
        assert_eq!(check_tls("x", false).is_err(), BUILD);
        let suites = tls_suites(rustls::crypto::aws_lc_rs::default_provider().cipher_suites);
        assert_eq!(suites.iter().all(|s| s.fips()), BUILD);
    }

    #[test]
    fn what_fips_mode_refuses() {
        for u in [
            Use::ChaCha20,
            Use::TripleDesEncrypt,
            Use::TripleDesNewKey,
            Use::GcmOutsideModule,
            Use::Sha1Signature,
            Use::RsaKeyBits(1024),
            Use::Argon2id,
        ] {
            assert!(refusal(u).is_some(), "{u:?}");
            assert_eq!(check(u).is_err(), BUILD, "{u:?}");
        }
        for u in [
            Use::TripleDesDecrypt,
            Use::RsaKeyBits(2048),
            Use::RsaKeyBits(4096),
        ] {
            assert!(refusal(u).is_none(), "{u:?}");
            assert!(check(u).is_ok());
        }
        let e = refusal(Use::ChaCha20).unwrap().to_string();
        assert!(e.contains("not allowed in FIPS mode"), "{e}");
    }
}
