//! One loaded PKCS#11 module per path in this process, and its recovery.
//!
//! A module is loaded and C_Initialize'd once and never unloaded: unloading
//! a module that holds live state crashes some modules, and every token of
//! the module shares its login state anyway. When a token fails (the device
//! was removed, the module lost its connection), the module is finalised and
//! initialised again: that is the only way PKCS#11 offers to rescan tokens.
//!
//! Every call into the module holds [`Module::enter`]'s read guard, and
//! re-initialisation takes the write side, so C_Finalize never runs under
//! another thread's call. Each re-initialisation bumps a generation number:
//! sessions and object handles from an older generation are void.

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use keyhold_core::{Error, Result};
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

/// Re-initialisations of one module are at least this far apart, so a token
/// that stays away costs one rescan a second, not one per request.
pub(crate) const MIN_REINIT_INTERVAL: Duration = Duration::from_secs(1);

pub(crate) struct Loaded {
    pub ctx: Pkcs11,
    pub generation: u64,
}

pub(crate) struct Module {
    path: PathBuf,
    state: RwLock<Loaded>,
    last_reinit: Mutex<Option<Instant>>,
}

fn initialize(ctx: &Pkcs11) -> std::result::Result<(), CkError> {
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Module {
    /// The module at `path`, loaded and initialised on first use.
    pub(crate) fn get(path: &Path) -> Result<Arc<Module>> {
        static MODULES: OnceLock<Mutex<HashMap<PathBuf, Arc<Module>>>> = OnceLock::new();
        let mut map = MODULES.get_or_init(|| Mutex::new(HashMap::new())).lock();
        if let Some(m) = map.get(path) {
            return Ok(m.clone());
        }
        let ctx = Pkcs11::new(path).map_err(|e| {
            Error::RootOfTrust(format!(
                "cannot load the PKCS#11 module {}: {e}",
                path.display()
            ))
        })?;
        initialize(&ctx).map_err(|e| {
            Error::RootOfTrust(format!("C_Initialize of {} failed: {e}", path.display()))
        })?;
        let m = Arc::new(Module {
            path: path.to_owned(),
            state: RwLock::new(Loaded { ctx, generation: 0 }),
            last_reinit: Mutex::new(None),
        });
        map.insert(path.to_owned(), m.clone());
        Ok(m)
    }

    /// Holds off re-initialisation while the caller uses the module. Never
    /// call `enter` again while holding the guard (the lock is fair: a
    /// waiting re-initialisation would deadlock with the second read).
    pub(crate) fn enter(&self) -> RwLockReadGuard<'_, Loaded> {
        self.state.read()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.state.read().generation
    }

    /// Finalises and re-initialises the module, unless someone already did
    /// since `seen_generation`, or the last time was under a second ago.
    /// Returns whether the module is now past `seen_generation`.
    pub(crate) fn reinitialize(&self, seen_generation: u64) -> bool {
        {
            let mut last = self.last_reinit.lock();
            if last.is_some_and(|t| t.elapsed() < MIN_REINIT_INTERVAL) {
                return self.generation() != seen_generation;
            }
            *last = Some(Instant::now());
        }
        let mut st = self.state.write();
        if st.generation != seen_generation {
            return true;
        }
        // Sessions of the old generation die with C_Finalize; their Rust
        // handles are forgotten by the pools, never closed.
        if let Err(e) = st.ctx.clone().finalize() {
            tracing::warn!(module = %self.path.display(), error = %e, "C_Finalize failed");
        }
        if let Err(e) = initialize(&st.ctx) {
            tracing::error!(module = %self.path.display(), error = %e, "C_Initialize failed");
        }
        st.generation += 1;
        tracing::warn!(module = %self.path.display(), generation = st.generation, "re-initialised the PKCS#11 module");
        true
    }
}
