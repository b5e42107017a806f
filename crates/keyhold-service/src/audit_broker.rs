//! The audit broker: every front-end records its key uses through it, so
//! a new front-end (a web console, another cloud's key API) is audited the
//! moment it exists, in the same tamper-evident log.
//!
//! A server attaches its log once it is open ([`AuditBroker::attach`]);
//! without one (benchmarks of the cost of auditing, tools) nothing is
//! recorded and every record "succeeds". With one, a record that cannot be
//! written is an error: the front-end then refuses the key use.

use std::sync::{Arc, OnceLock};

use keyhold_audit::{AuditLog, AuditStatus, Event};

/// Where every front-end's audit records go.
#[derive(Default)]
pub struct AuditBroker {
    log: OnceLock<Arc<AuditLog>>,
    /// Every record counted, for the console's charts.
    rates: crate::rates::Rates,
}

impl std::fmt::Debug for AuditBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditBroker")
            .field("attached", &self.is_attached())
            .finish()
    }
}

/// A record queued by [`AuditBroker::submit`] and not yet known written.
#[derive(Debug, Clone, Copy)]
#[must_use = "wait for the record before answering"]
pub struct AuditTicket(Option<u64>);

impl AuditBroker {
    /// Sends every record from now on to `log`. A broker has one log for
    /// its life: false (and `log` unused) when one is attached already.
    pub fn attach(&self, log: Arc<AuditLog>) -> bool {
        self.log.set(log).is_ok()
    }

    /// Whether records are kept at all.
    pub fn is_attached(&self) -> bool {
        self.log.get().is_some()
    }

    /// Records `ev` from an async front-end; Err when it could not be written.
    pub async fn record(&self, ev: &Event<'_>) -> Result<(), String> {
        self.count(ev);
        match self.log.get() {
            Some(log) => log.record(ev).await,
            None => Ok(()),
        }
    }

    /// Records `ev` from a front-end on a blocking thread.
    pub fn record_blocking(&self, ev: &Event<'_>) -> Result<(), String> {
        self.count(ev);
        match self.log.get() {
            Some(log) => log.record_blocking(ev),
            None => Ok(()),
        }
    }

    /// Queues `ev` from a front-end on a blocking thread without waiting
    /// for the write; [`AuditBroker::wait_blocking`] with the ticket says
    /// whether it was written (see [`AuditLog::submit`]).
    pub fn submit(&self, ev: &Event<'_>) -> AuditTicket {
        self.count(ev);
        AuditTicket(self.log.get().map(|log| log.submit(ev)))
    }

    /// Waits for a submitted record (and those before it) to be written.
    pub fn wait_blocking(&self, ticket: AuditTicket) -> Result<(), String> {
        match (self.log.get(), ticket.0) {
            (Some(log), Some(t)) => log.wait_blocking(t),
            _ => Ok(()),
        }
    }

    fn count(&self, ev: &Event<'_>) {
        self.rates.count(
            keyhold_core::now(),
            ev.frontend,
            ev.store,
            ev.result == "OK",
            ev.latency_us,
        );
    }

    /// Requests per minute over the last hour, per front-end and key store.
    pub fn last_hour(&self) -> Vec<crate::rates::Series> {
        self.rates.last_hour(keyhold_core::now())
    }

    /// The log's state (failing, low disk) for health and metrics.
    pub fn status(&self) -> Option<AuditStatus> {
        self.log.get().map(|l| l.status())
    }
}
