//! The console's pages, rendered on the server (maud escapes every value
//! put into them). Forms that change something are drawn only for a role
//! that may make the change, and every one carries the session's CSRF
//! token; the API refuses the rest anyway.

use crate::admin_ops::StatusName;
use crate::admin_ops::{
    AuditVerifyView, ClientCertView, CredentialView, KeyView, KmipStatusView, NewCredentialView,
    NewTokenView, PolicyDecision, PolicySummary, StatusView, StoreView, TokenView, VersionView,
};
use keyhold_service::api_tokens::{AdminIdentity, Role};
use keyhold_service::rates::{Figures, Series};
use maud::{html, Markup, DOCTYPE};

/// What every page shows around its content.
pub(super) struct Frame<'a> {
    pub(super) title: &'a str,
    pub(super) who: Option<&'a AdminIdentity>,
    pub(super) csrf: &'a str,
    /// Break glass in force (lockdown, disabled stores): what, and who set
    /// it when, if the audit log says.
    pub(super) break_glass: Vec<(String, String)>,
}

/// A store prefix as one path segment of a console URL (`/a/b` → `a%2Fb`).
pub(super) fn seg(s: &str) -> String {
    const SEGMENT: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.');
    percent_encoding::utf8_percent_encode(s.trim_start_matches('/'), SEGMENT).to_string()
}

/// A store prefix as people read it (`a/b` → `/a/b`).
pub(super) fn display_store(s: &str) -> String {
    format!("/{}", s.trim_start_matches('/'))
}

pub(super) fn store_url(store: &str) -> String {
    format!("/ui/stores/{}", seg(store))
}

pub(super) fn key_url(store: &str, key: &str) -> String {
    format!("/ui/stores/{}/keys/{}", seg(store), seg(key))
}

fn may_change(who: Option<&AdminIdentity>) -> bool {
    who.is_some_and(|w| w.role == Role::Custodian)
}

/// The box a break-glass switch needs ticked.
fn confirm_box(what: &str) -> Markup {
    html! {
        span class="confirm-box" {
            input type="checkbox" id="confirm-disable" name="confirm" value="yes" required;
            label for="confirm-disable" { "Confirm: " (what) }
        }
    }
}

/// A hidden CSRF field.
fn csrf(token: &str) -> Markup {
    html! { input type="hidden" name="csrf" value=(token); }
}

pub(super) fn page(f: &Frame<'_>, content: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (f.title) " — Keyhold" }
                link rel="stylesheet" href="/ui/assets/console.css";
                script src="/ui/assets/console.js" defer {}
            }
            body {
                a class="skip" href="#main" { "Skip to content" }
                header {
                    span class="brand" { "Keyhold" }
                    @if let Some(w) = f.who {
                        nav aria-label="Main" {
                            a href="/ui/" { "Overview" }
                            @if w.role != Role::Operator {
                                a href="/ui/stores" { "Key stores" }
                                a href="/ui/policies" { "Policies" }
                                a href="/ui/tokens" { "Admin tokens" }
                            }
                            @if w.role != Role::Operator { a href="/ui/kmip" { "KMIP" } }
                            @if w.role == Role::Auditor { a href="/ui/audit" { "Audit" } }
                            @if w.role == Role::Custodian { a href="/ui/backups" { "Backups" } }
                        }
                        form class="signout" method="post" action="/ui/logout" {
                            (csrf(f.csrf))
                            span { (w.name) " (" (w.role.as_str()) ")" }
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                @if !f.break_glass.is_empty() {
                    div class="banner" role="alert" {
                        @for (what, who) in &f.break_glass {
                            p { strong { (what) } (who) }
                        }
                    }
                }
                main id="main" {
                    h1 { (f.title) }
                    (content)
                }
            }
        }
    }
}

pub(super) fn login(error: Option<&str>) -> Markup {
    let f = Frame {
        title: "Sign in",
        who: None,
        csrf: "",
        break_glass: Vec::new(),
    };
    page(
        &f,
        html! {
            @if let Some(e) = error { p class="error" role="alert" { (e) } }
            form method="post" action="/ui/login" class="card" {
                label for="token" { "Admin token" }
                input id="token" name="token" type="password" autocomplete="off" required
                    aria-describedby="token-help";
                p id="token-help" class="help" {
                    "A token from " code { "keyhold admin token create NAME --role ROLE" }
                    ". It is exchanged for a session and not kept in the browser."
                }
                button type="submit" { "Sign in" }
            }
        },
    )
}

pub(super) fn error(f: &Frame<'_>, status: u16, message: &str, back: &str) -> Markup {
    page(
        f,
        html! {
            p class="error" role="alert" { (message) }
            p { "(" (status) ") " a href=(back) { "Go back" } }
        },
    )
}

/// A line chart of per-minute figures (requests, and errors in red),
/// drawn on the server as SVG; `label` says it for screen readers.
fn line_chart(per_minute: &[Figures], height: f64, label: &str) -> Markup {
    const W: f64 = 600.0;
    let max = per_minute
        .iter()
        .map(|f| f.requests)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let n = per_minute.len().max(2) as f64 - 1.0;
    let line = |v: &dyn Fn(&Figures) -> u64| -> String {
        per_minute
            .iter()
            .enumerate()
            .map(|(i, f)| {
                format!(
                    "{:.1},{:.1}",
                    i as f64 * W / n,
                    height - v(f) as f64 * (height - 4.0) / max
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    };
    html! {
        svg viewBox={"0 0 " (W) " " (height)} preserveAspectRatio="none" width="100%" height=(height) role="img" aria-label=(label) {
            title { (label) }
            polyline class="requests" fill="none" points=(line(&|f| f.requests)) {}
            polyline class="errors" fill="none" points=(line(&|f| f.errors)) {}
        }
    }
}

fn sum(per_minute: &[Figures]) -> Figures {
    let mut t = Figures::default();
    for f in per_minute {
        t.requests += f.requests;
        t.errors += f.errors;
        t.latency_us += f.latency_us;
        t.timed += f.timed;
    }
    t
}

/// One front-end's last hour: its chart, then one small chart per key
/// store, with the numbers beside them.
fn chart(s: &Series) -> Markup {
    let t = sum(&s.per_minute);
    let peak = s.per_minute.iter().map(|f| f.requests).max().unwrap_or(0);
    let label = format!(
        "{}: {} requests in the last hour, {} errors, at most {peak} in a minute",
        s.frontend, t.requests, t.errors
    );
    html! {
        figure class="chart" {
            figcaption {
                strong { (s.frontend) } ": " (t.requests) " requests, " (t.errors) " errors"
                @if let Some(m) = t.mean_ms() { ", mean latency " (format!("{m:.2}")) " ms" }
                " (last hour; peak " (peak) "/min)"
            }
            (line_chart(&s.per_minute, 120.0, &label))
            table {
                caption { (s.frontend) " by key store (last hour)" }
                thead { tr {
                    th scope="col" { "Key store" } th scope="col" { "Per minute" } th scope="col" { "Requests" }
                    th scope="col" { "Errors" } th scope="col" { "Mean latency (ms)" }
                } }
                tbody {
                    @for st in &s.per_store {
                        @let name = if st.store.is_empty() { "—" } else { st.store.as_str() };
                        tr {
                            td { (name) }
                            td class="spark" {
                                (line_chart(&st.per_minute, 32.0, &format!("{} on {}: {} requests, {} errors in the last hour", name, s.frontend, st.total.requests, st.total.errors)))
                            }
                            td { (st.total.requests) } td { (st.total.errors) }
                            td { (st.total.mean_ms().map(|m| format!("{m:.2}")).unwrap_or_default()) }
                        }
                    }
                }
            }
        }
    }
}

/// What the overview shows beside the API's status.
pub(super) struct OverviewExtra {
    pub(super) rates: Vec<Series>,
    /// Nodes on shared storage, with their heartbeats.
    pub(super) fleet: Vec<keyhold_storage::NodeInfo>,
    pub(super) audit: Option<keyhold_audit::AuditStatus>,
    /// The last verification run from the console: (when, by whom, intact).
    pub(super) last_verification: Option<(i64, String, bool)>,
    pub(super) storage: &'static str,
    /// Now, in milliseconds (a node's heartbeat is judged against it).
    pub(super) now_ms: i64,
}

/// A node's health from its heartbeat: up while its heartbeats arrive.
fn node_health(n: &keyhold_storage::NodeInfo, now_ms: i64) -> String {
    let ttl = crate::presence::NODE_TTL.as_millis() as i64;
    let age = (now_ms - n.heartbeat_ms).max(0);
    if age <= ttl {
        "up".into()
    } else {
        format!("no heartbeat for {} s", age / 1000)
    }
}

fn ms_time(ms: i64) -> String {
    crate::admin_ops::time(ms / 1000)
}

pub(super) fn overview(f: &Frame<'_>, s: &StatusView, x: &OverviewExtra) -> Markup {
    let change = may_change(f.who);
    page(
        f,
        html! {
            section class="card" {
                h2 { "Requests (this server, last hour, per minute)" }
                @if x.rates.is_empty() { p { "No key use yet in the last hour." } }
                @for r in &x.rates { (chart(r)) }
            }
            section class="cards" {
                @if !x.fleet.is_empty() {
                    div class="card" {
                        h2 { "Fleet (nodes on the shared database)" }
                        table {
                            thead { tr {
                                th scope="col" { "Node" } th scope="col" { "Health" } th scope="col" { "Started" }
                                th scope="col" { "Last heartbeat" } th scope="col" { "Break-glass epoch" }
                            } }
                            tbody {
                                @for n in &x.fleet {
                                    tr {
                                        td { (n.id) } td { (node_health(n, x.now_ms)) } td { (ms_time(n.started_ms)) }
                                        td { (ms_time(n.heartbeat_ms)) } td { (n.ack_epoch) }
                                    }
                                }
                            }
                        }
                    }
                }
                div class="card" {
                    h2 { "Audit log" }
                    @if let Some(a) = &x.audit {
                        dl {
                            dt { "Chain" } dd { (a.chain) }
                            dt { "Records" } dd { (a.records) }
                            dt { "Writing" } dd class=(if a.failing.is_some() { "error" } else { "" }) {
                                (a.failing.as_deref().unwrap_or("OK"))
                            }
                            @if let Some(free) = a.free_bytes {
                                dt { "Free disk" } dd class=(if a.low_disk { "error" } else { "" }) { (free / (1 << 20)) " MiB" }
                            }
                        }
                    }
                    p {
                        @match &x.last_verification {
                            Some((t, who, ok)) => {
                                "Last verified " (crate::admin_ops::time(*t)) " by " (who) ": "
                                strong { (if *ok { "intact" } else { "does NOT verify" }) } "."
                            }
                            None => { "Not verified from the console since this server started (an auditor can, or " code { "keyhold audit verify" } ")." }
                        }
                    }
                }
            }
            section class="cards" {
                div class="card" {
                    h2 { "This node" }
                    dl {
                        dt { "Version" } dd { (s.version) }
                        dt { "Health" } dd class={"health " (s.health.to_lowercase())} { (s.health) }
                        dt { "FIPS mode" } dd { (if s.fips.build && s.fips.module_fips_mode { "on (FIPS build, module in FIPS mode)" } else if s.fips.build { "FIPS build, module NOT in FIPS mode" } else { "off (not a FIPS build)" }) }
                        dt { "Data directory" } dd { code { (s.data_dir) } }
                        dt { "Storage" } dd { (x.storage) }
                        @if let Some(n) = s.live_servers { dt { "Live nodes" } dd { (n) } }
                    }
                }
                div class="card" {
                    h2 { "Root of trust" }
                    table {
                        thead { tr { th scope="col" { "Id" } th scope="col" { "Model" } th scope="col" { "Health" } } }
                        tbody {
                            @for e in &s.ekms {
                                tr { td { (e.id) } td { (e.model) } td { (e.status) } }
                            }
                        }
                    }
                }
                div class="card" {
                    h2 { "Stored rows" }
                    @if s.integrity.genuine { p { "Every row verifies." } }
                    @else {
                        p class="error" { "Rows changed outside Keyhold (refused):" }
                        ul { @for r in &s.integrity.refused { li { (r) } } }
                    }
                }
                div class="card" {
                    h2 { "Keys" }
                    table {
                        thead { tr { th scope="col" { "State / status" } th scope="col" { "Keys" } } }
                        tbody { @for (k, n) in &s.keys { tr { td { (k) } td { (n) } } } }
                    }
                }
                div class="card" {
                    h2 { "Servers" }
                    table {
                        thead { tr { th scope="col" { "Pid" } th scope="col" { "Started" } th scope="col" { "Listeners" } } }
                        tbody {
                            @for v in &s.servers {
                                tr {
                                    td { (v.pid) } td { (v.started_at) }
                                    td { @for (name, addr) in &v.listeners { (name) " " (addr) br; } }
                                }
                            }
                        }
                    }
                }
                div class="card" {
                    h2 { "Break glass" }
                    @if change {
                        form method="post" action="/ui/lockdown" class="confirm" {
                            (csrf(f.csrf))
                            input type="hidden" name="lockdown" value=(if s.lockdown { "off" } else { "on" });
                            @if s.lockdown {
                                p { "Every key is refused now." }
                                button type="submit" { "Lift the lockdown" }
                            } @else {
                                p { "Refuse every key on every front-end, on every node, from the next request." }
                                label for="confirm-lockdown" { "Type LOCKDOWN to confirm" }
                                input id="confirm-lockdown" name="confirm" required autocomplete="off";
                                button type="submit" class="danger" { "Lock down" }
                            }
                        }
                    } @else {
                        p { (if s.lockdown { "Locked down." } else { "Not locked down." }) }
                    }
                }
            }
        },
    )
}

fn is_enabled(s: StatusName) -> bool {
    matches!(s, StatusName::Enabled)
}

fn status_text(enabled: bool) -> &'static str {
    if enabled {
        "ENABLED"
    } else {
        "DISABLED"
    }
}

/// A store's cloud API as people call it.
fn api_name(api: &str) -> &'static str {
    match api {
        "azure-ekm" => "Azure Managed HSM (EKM)",
        "ms-dke" => "Microsoft Double Key Encryption",
        "google-cse" => "Google Workspace CSE",
        _ => "AWS XKS",
    }
}

pub(super) fn stores(f: &Frame<'_>, stores: &[StoreView]) -> Markup {
    page(
        f,
        html! {
            table {
                caption { "Key stores" }
                thead { tr {
                    th scope="col" { "Prefix" } th scope="col" { "Cloud API" } th scope="col" { "Status" } th scope="col" { "Keys" }
                    th scope="col" { "Credentials" } th scope="col" { "Description" }
                } }
                tbody {
                    @for s in stores {
                        tr {
                            td { a href=(store_url(&s.prefix)) { (s.prefix) } }
                            td { (api_name(&s.api)) }
                            td { (status_text(is_enabled(s.status))) }
                            td { (s.keys) } td { (s.credentials) } td { (s.description) }
                        }
                    }
                }
            }
            @if may_change(f.who) {
                form method="post" action="/ui/stores" class="card" {
                    h2 { "Create a key store" }
                    (csrf(f.csrf))
                    label for="prefix" { "Prefix" }
                    input id="prefix" name="prefix" required placeholder="/payments" aria-describedby="prefix-help";
                    p id="prefix-help" class="help" { "The XKS path prefix AWS KMS will call, e.g. /payments." }
                    label for="description" { "Description" }
                    input id="description" name="description";
                    button type="submit" { "Create" }
                }
            }
        },
    )
}

/// A store's cloud API: what serves it now, and (for a custodian) the form
/// that changes it. Lists take one item per line.
pub(super) fn store_api(f: &Frame<'_>, s: &StoreView) -> Markup {
    let url = store_url(&s.prefix);
    let az = s.azure_ekm.as_ref();
    let dke = s.ms_dke.as_ref();
    let cse = s.google_cse.as_ref();
    let prefix = az
        .map(|a| a.path_prefix.clone())
        .or(dke.map(|d| d.path_prefix.clone()))
        .or(cse.map(|c| c.path_prefix.clone()))
        .unwrap_or_default();
    let issuers = dke
        .map(|d| d.issuers.join("\n"))
        .or(cse.map(|c| c.idp_issuers.join("\n")))
        .unwrap_or_default();
    let audience = dke
        .map(|d| d.audience.clone())
        .or(cse.map(|c| c.idp_audiences.join(" ")))
        .unwrap_or_default();
    let jwks = dke
        .map(|d| d.jwks_url.clone())
        .or(cse.map(|c| c.idp_jwks_url.clone()))
        .unwrap_or_default();
    let field = |id: &'static str, label: &'static str, value: String| {
        html! { label for=(id) { (label) } input id=(id) name=(id) value=(value); }
    };
    let area = |id: &'static str, label: &'static str, value: String| {
        html! { label for=(id) { (label) } textarea id=(id) name=(id) rows="3" { (value) } }
    };
    page(
        f,
        html! {
            p { "This store serves " strong { (api_name(&s.api)) } ". "
                a href=(url) { "Back to the store" } }
            @if may_change(f.who) {
                form method="post" action={(url) "/api"} class="card" {
                    h2 { "Change the cloud API" }
                    (csrf(f.csrf))
                    label for="api" { "Cloud API" }
                    select id="api" name="api" {
                        @for (v, n) in [("xks", "AWS XKS"), ("azure-ekm", "Azure Managed HSM (EKM)"), ("ms-dke", "Microsoft Double Key Encryption"), ("google-cse", "Google Workspace CSE")] {
                            option value=(v) selected[s.api == v] { (n) }
                        }
                    }
                    (field("path_prefix", "Path prefix (Azure, DKE, CSE; e.g. /contoso/prod)", prefix))
                    fieldset {
                        legend { "Azure Managed HSM" }
                        (field("client_cn", "Client certificate's subject common name", az.map(|a| a.client_cn.clone()).unwrap_or_default()))
                        (area("client_ca_pem", "Client certificate's CAs (PEM)", az.map(|a| a.client_ca_pem.clone()).unwrap_or_default()))
                    }
                    fieldset {
                        legend { "Users' tokens (DKE: Entra ID; CSE: the identity provider)" }
                        (area("issuers", "Token issuers, one per line", issuers))
                        (field("audience", "Audience (DKE: https://HOST; CSE: the client id)", audience))
                        (field("jwks_url", "JWK set URL (empty for DKE: Entra ID's)", jwks))
                        (area("jwks_ca_pem", "CA of the JWK set's server (PEM; empty: the system's)", dke.and_then(|d| d.jwks_ca_pem.clone()).or(cse.and_then(|c| c.idp_jwks_ca_pem.clone())).unwrap_or_default()))
                    }
                    fieldset {
                        legend { "Double Key Encryption" }
                        (area("authorized_emails", "Who may decrypt: addresses or @domain, one per line", dke.map(|d| d.authorized_emails.join("\n")).unwrap_or_default()))
                        (area("authorized_groups", "… or groups and app roles, one per line", dke.map(|d| d.authorized_groups.join("\n")).unwrap_or_default()))
                        (field("cache_days", "Days Office may cache a public key", dke.map(|d| d.cache_days.to_string()).unwrap_or_default()))
                    }
                    fieldset {
                        legend { "Google Workspace CSE" }
                        (field("kacls_url", "KACLS URL (as in the Google Admin console)", cse.map(|c| c.kacls_url.clone()).unwrap_or_default()))
                        (field("kek", "Key encryption key (an AES-256 key of this store)", cse.map(|c| c.kek.clone()).unwrap_or_default()))
                        (field("authz_jwks_url", "Google's authorization keys (empty: Google's)", cse.and_then(|c| c.authz_jwks_url.clone()).unwrap_or_default()))
                        (area("authz_jwks_ca_pem", "CA of that server (PEM; empty: the system's)", cse.and_then(|c| c.authz_jwks_ca_pem.clone()).unwrap_or_default()))
                        (area("allowed_domains", "Perimeter: users' domains, one per line (empty: any)", cse.map(|c| c.allowed_domains.join("\n")).unwrap_or_default()))
                        label class="check" { input type="checkbox" name="allow_guests" value="yes" checked[cse.is_some_and(|c| c.allow_guests)]; " Let guests in" }
                        (area("privileged_users", "Privileged users (bulk import, Takeout), one per line", cse.map(|c| c.privileged_users.join("\n")).unwrap_or_default()))
                        (area("migration_peers", "Migration peers (their KACLS URLs), one per line", cse.map(|c| c.migration_peers.join("\n")).unwrap_or_default()))
                        (area("peer_ca_pem", "CA of the peers' HTTPS (PEM; empty: the system's)", cse.and_then(|c| c.peer_ca_pem.clone()).unwrap_or_default()))
                        (field("signing_key", "Token-signing key (an RSA key of this store, SIGN)", cse.and_then(|c| c.signing_key.clone()).unwrap_or_default()))
                    }
                    button type="submit" { "Apply (in force on every server when it answers)" }
                }
            }
        },
    )
}

/// A store's page: its status switch and its keys (a page of them).
pub(super) fn store(
    f: &Frame<'_>,
    s: &StoreView,
    keys: &[KeyView],
    search: &str,
    next: Option<&str>,
) -> Markup {
    let enabled = is_enabled(s.status);
    let url = store_url(&s.prefix);
    page(
        f,
        html! {
            p { (s.description) }
            dl {
                dt { "Status" } dd { (status_text(enabled)) }
                dt { "Cloud API" } dd { (api_name(&s.api)) }
                @if let Some(a) = &s.azure_ekm {
                    dt { "Azure path prefix" } dd { code { (a.path_prefix) "/{key}/…" } }
                    dt { "Managed HSM client certificate" } dd { code { (a.client_cn) } }
                } @else if let Some(d) = &s.ms_dke {
                    dt { "Key URLs" } dd { code { (d.audience) (d.path_prefix) "/{key}" } }
                    dt { "Token issuers" } dd { @for i in &d.issuers { code { (i) } " " } }
                    dt { "Who may decrypt" } dd { (d.authorized_emails.join(", ")) @if !d.authorized_groups.is_empty() { " · groups " (d.authorized_groups.join(", ")) } }
                } @else if let Some(c) = &s.google_cse {
                    dt { "KACLS URL" } dd { code { (c.kacls_url) } }
                    dt { "Key encryption key" } dd { code { (c.kek) } }
                    dt { "Identity provider" } dd { @for i in &c.idp_issuers { code { (i) } " " } }
                    dt { "Perimeter" } dd { @if c.allowed_domains.is_empty() { "any domain" } @else { (c.allowed_domains.join(", ")) } }
                } @else {
                    dt { "XKS URI path" } dd { code { (s.uri_path) } }
                    dt { "Credentials" } dd { (s.credentials) }
                }
                dt { "Keys" } dd { (s.keys) }
            }
            @if may_change(f.who) {
                form method="post" action={(url) "/status"} class="inline" {
                    (csrf(f.csrf))
                    input type="hidden" name="status" value=(if enabled { "DISABLED" } else { "ENABLED" });
                    @if enabled { (confirm_box("every key of this store is refused from the next request")) }
                    button type="submit" class=(if enabled { "danger" } else { "" }) {
                        (if enabled { "Disable the store (break glass)" } else { "Enable the store" })
                    }
                }
            }
            p {
                @if s.api == "xks" { a href={(url) "/credentials"} { "SigV4 credentials" } " · " }
                a href={(url) "/policy"} { "Policy" } " · " a href={(url) "/api"} { "Cloud API settings" }
            }
            form method="get" action=(url) class="search" role="search" {
                label for="q" { "Find keys by id prefix" }
                input id="q" name="q" value=(search);
                button type="submit" { "Search" }
            }
            table {
                caption { "Keys" }
                thead { tr {
                    th scope="col" { "Key id" } th scope="col" { "Type" } th scope="col" { "Status" }
                    th scope="col" { "State" } th scope="col" { "Usage" } th scope="col" { "Version" }
                    th scope="col" { "Protection" }
                } }
                tbody {
                    @for k in keys {
                        tr {
                            td { a href=(key_url(&s.prefix, &k.key_id)) { (k.key_id) } }
                            td { (k.key_spec) } td { (status_text(is_enabled(k.status))) }
                            td { (k.state) } td { (k.usage.join(",")) } td { (k.current_version) }
                            td { (k.protection) }
                        }
                    }
                }
            }
            @if let Some(after) = next {
                p { a href={(url) "?q=" (search) "&after=" (after)} rel="next" { "Next page" } }
            }
            @if may_change(f.who) {
                form method="post" action={(url) "/keys"} class="card" {
                    h2 { "Create a key" }
                    (csrf(f.csrf))
                    label for="key_id" { "Key id (empty: a random UUID)" }
                    input id="key_id" name="key_id";
                    label for="key_type" { "Type" }
                    select id="key_type" name="key_type" {
                        @for t in ["aes-256", "rsa-2048", "rsa-3072", "rsa-4096", "ec-p256", "ec-p384", "ec-p521", "ed25519"] {
                            option value=(t) { (t) }
                        }
                    }
                    label for="usage" { "Usage (empty: the type's default)" }
                    input id="usage" name="usage" placeholder="ENCRYPT,DECRYPT";
                    label for="protection" { "Protection" }
                    select id="protection" name="protection" {
                        option value="software" { "software (wrapped under the root of trust)" }
                        option value="hsm" { "hsm (generated and used in the HSM)" }
                    }
                    label for="activate_at" { "Activate at (RFC 3339 UTC; empty: now)" }
                    input id="activate_at" name="activate_at" placeholder="2027-01-31T00:00:00Z";
                    label for="deactivate_at" { "Deactivate at (RFC 3339 UTC; empty: never)" }
                    input id="deactivate_at" name="deactivate_at";
                    label for="rotation_days" { "Rotate every (days; empty: by hand)" }
                    input id="rotation_days" name="rotation_days" type="number" min="1";
                    button type="submit" { "Create" }
                }
                form method="post" action={(url) "/hsm-keys"} class="card" {
                    h2 { "Adopt a key already in the HSM" }
                    (csrf(f.csrf))
                    label for="hsm-label" { "Its PKCS#11 label" }
                    input id="hsm-label" name="label" required;
                    label for="hsm-key-id" { "Key id (empty: the label)" }
                    input id="hsm-key-id" name="key_id";
                    label for="hsm-usage" { "Usage (empty: the type's default)" }
                    input id="hsm-usage" name="usage";
                    button type="submit" { "Adopt" }
                }
            }
        },
    )
}

/// A store's SigV4 credentials (never their secrets), and the forms that
/// make a new one.
pub(super) fn credentials(f: &Frame<'_>, store: &str, creds: &[CredentialView]) -> Markup {
    let url = store_url(store);
    let change = may_change(f.who);
    page(
        f,
        html! {
            p { a href=(url) { "← " (display_store(store)) } }
            table {
                caption { "Credentials (AWS KMS signs its XKS requests with one of them)" }
                thead { tr { th scope="col" { "Access key id" } th scope="col" { "Created" } @if change { th scope="col" { "Remove" } } } }
                tbody {
                    @for c in creds {
                        tr {
                            td { code { (c.access_key_id) } } td { (c.created_at) }
                            @if change {
                                td {
                                    form method="post" action={(url) "/credentials/" (seg(&c.access_key_id)) "/remove"} class="inline" {
                                        (csrf(f.csrf))
                                        button type="submit" class="danger" aria-label={"Remove " (c.access_key_id)} { "Remove" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if change {
                div class="actions" {
                    form method="post" action={(url) "/credentials"} class="inline" {
                        (csrf(f.csrf))
                        button type="submit" { "Add a credential (the secret is shown once)" }
                    }
                    form method="post" action={(url) "/kms-config"} class="inline" {
                        (csrf(f.csrf))
                        button type="submit" { "Download a new credential as the AWS console's key-store JSON" }
                    }
                }
            }
        },
    )
}

/// A credential just made: its secret, this once.
pub(super) fn credential(f: &Frame<'_>, c: &NewCredentialView, back: &str) -> Markup {
    page(
        f,
        html! {
            p class="banner" role="status" { "Copy the secret now: it is not shown again and cannot be recovered." }
            dl {
                dt { "Key store" } dd { (c.store) }
                dt { "Access key id" } dd { code id="access-key-id" { (c.access_key_id) } }
                dt { "Secret access key" } dd { code id="secret-access-key" { (c.secret_access_key) } }
                dt { "XKS proxy URI path" } dd { code { (c.store.trim_end_matches('/')) "/kms/xks/v1" } }
            }
            p { a href={(back) "/credentials"} { "Done" } }
        },
    )
}

/// A key's page: what it is, its versions, its history, and its controls.
pub(super) fn key(
    f: &Frame<'_>,
    k: &KeyView,
    versions: &[VersionView],
    history_records: Option<&[serde_json::Value]>,
) -> Markup {
    let enabled = is_enabled(k.status);
    let url = key_url(&k.store, &k.key_id);
    page(
        f,
        html! {
            p { a href=(store_url(&k.store)) { "← " (k.store) } " · " a href={(url) "/policy"} { "Policy" } }
            dl {
                dt { "Type" } dd { (k.key_spec) }
                dt { "Status" } dd { (status_text(enabled)) }
                dt { "State" } dd { (k.state) }
                dt { "Usage" } dd { (k.usage.join(",")) }
                dt { "Protection" } dd { (k.protection) @if let Some(l) = &k.hsm_label { " (" (l) ")" } }
                dt { "Current version" } dd { (k.current_version) }
                dt { "Created" } dd { (k.created_at) }
                @if let Some(t) = &k.destroy_at { dt { "Destruction scheduled" } dd { (t) } }
                @if let Some(t) = &k.next_rotation_at { dt { "Next rotation" } dd { (t) } }
            }
            table {
                caption { "Versions" }
                thead { tr { th scope="col" { "Version" } th scope="col" { "Created" } th scope="col" { "Status" } } }
                tbody {
                    @for v in versions {
                        tr {
                            td { (v.version) @if v.current { " (current)" } }
                            td { (v.created_at) } td { (v.status) }
                        }
                    }
                }
            }
            @if let Some(h) = history_records { (history(h)) }
            @if may_change(f.who) {
                div class="actions" {
                    form method="post" action={(url) "/status"} class="inline" {
                        (csrf(f.csrf))
                        input type="hidden" name="status" value=(if enabled { "DISABLED" } else { "ENABLED" });
                        @if enabled { (confirm_box("this key is refused from the next request")) }
                        button type="submit" class=(if enabled { "danger" } else { "" }) {
                            (if enabled { "Disable (break glass)" } else { "Enable" })
                        }
                    }
                    form method="post" action={(url) "/rotate"} class="inline" {
                        (csrf(f.csrf))
                        button type="submit" { "Rotate" }
                    }
                    @for (action, label) in [("activate", "Activate"), ("deactivate", "Deactivate (decrypt only)"), ("cancel-destroy", "Cancel the destruction")] {
                        form method="post" action={(url) "/" (action)} class="inline" {
                            (csrf(f.csrf))
                            button type="submit" { (label) }
                        }
                    }
                }
                form method="post" action={(url) "/usage"} class="card" {
                    h2 { "Usage" }
                    (csrf(f.csrf))
                    label for="new-usage" { "Allowed operations (ENCRYPT, DECRYPT, SIGN, VERIFY or NONE)" }
                    input id="new-usage" name="usage" value=(k.usage.join(","));
                    button type="submit" { "Change" }
                }
                form method="post" action={(url) "/compromise"} class="card" {
                    h2 { "Mark compromised" }
                    (csrf(f.csrf))
                    p class="help" { "It then decrypts only, and every use is reported." }
                    label for="confirm-compromise" { "Type the key id (" (k.key_id) ") to confirm" }
                    input id="confirm-compromise" name="confirm" required autocomplete="off";
                    button type="submit" class="danger" { "Mark compromised" }
                }
                form method="post" action={(url) "/destroy"} class="card" {
                    h2 { "Destroy" }
                    (csrf(f.csrf))
                    label for="days" { "Days from now (7 to 30; refused meanwhile, cancellable)" }
                    input id="days" name="days" type="number" min="7" max="30" value="7";
                    label for="confirm-destroy" { "Type the key id (" (k.key_id) ") to confirm" }
                    input id="confirm-destroy" name="confirm" required autocomplete="off";
                    button type="submit" class="danger" { "Schedule the destruction" }
                }
                form method="post" action={(url) "/retire"} class="card" {
                    h2 { "Retire old versions" }
                    (csrf(f.csrf))
                    label for="min-version" { "Minimum version that still decrypts" }
                    input id="min-version" name="version" type="number" min="1" max=(k.current_version) value=(k.min_decrypt_version);
                    button type="submit" { "Set" }
                }
                form method="post" action={(url) "/trim"} class="inline" {
                    (csrf(f.csrf))
                    button type="submit" class="danger" { "Crypto-shred the retired versions" }
                }
            }
        },
    )
}

/// A key's state history: the audit log's records about it.
pub(super) fn history(records: &[serde_json::Value]) -> Markup {
    html! {
        table {
            caption { "History (from the audit log, newest first)" }
            thead { tr { th scope="col" { "Time" } th scope="col" { "Operation" } th scope="col" { "Result" } th scope="col" { "By" } } }
            tbody {
                @for r in records {
                    tr {
                        td { (crate::admin_ops::time(r["ts_ms"].as_i64().unwrap_or(0) / 1000)) }
                        td { (r["operation"].as_str().unwrap_or("")) }
                        td { (r["result"].as_str().unwrap_or("")) }
                        td { (r["actor"].as_str().unwrap_or("")) }
                    }
                }
            }
        }
    }
}

/// Admin tokens: who may use the API and the console (never a secret).
pub(super) fn tokens(f: &Frame<'_>, tokens: &[TokenView], made: Option<&NewTokenView>) -> Markup {
    let change = may_change(f.who);
    page(
        f,
        html! {
            @if let Some(t) = made {
                div class="banner" role="status" {
                    p { "Token " strong { (t.name) } " (" (t.role) ") — copy it now: it is not shown again." }
                    code id="new-token" { (t.token) }
                }
            }
            table {
                caption { "Admin tokens" }
                thead { tr {
                    th scope="col" { "Name" } th scope="col" { "Role" } th scope="col" { "Id" }
                    th scope="col" { "Created" } th scope="col" { "Expires" } th scope="col" { "Genuine" }
                    @if change { th scope="col" { "Revoke" } }
                } }
                tbody {
                    @for t in tokens {
                        tr {
                            td { (t.name) } td { (t.role) } td { code { (t.id) } } td { (t.created) }
                            td { (t.expires.as_deref().unwrap_or("never")) }
                            td { (if t.genuine { "yes" } else { "NO (changed outside Keyhold)" }) }
                            @if change {
                                td {
                                    form method="post" action={"/ui/tokens/" (seg(&t.name)) "/revoke"} class="inline" {
                                        (csrf(f.csrf))
                                        button type="submit" class="danger" aria-label={"Revoke " (t.name)} { "Revoke" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if change {
                form method="post" action="/ui/tokens" class="card" {
                    h2 { "Create a token" }
                    (csrf(f.csrf))
                    label for="name" { "Name" }
                    input id="name" name="name" required;
                    label for="role" { "Role" }
                    select id="role" name="role" {
                        option value="auditor" { "auditor (reads metadata and the audit log)" }
                        option value="operator" { "operator (status only)" }
                        option value="custodian" { "custodian (changes)" }
                    }
                    label for="expires_days" { "Expires after (days; empty: never)" }
                    input id="expires_days" name="expires_days" type="number" min="1";
                    button type="submit" { "Create" }
                }
            }
        },
    )
}

/// KMIP: objects by owner, type and state, the listener, client
/// certificates (issued as a download, revoked), grants.
pub(super) fn kmip(f: &Frame<'_>, s: &KmipStatusView, certs: &[ClientCertView]) -> Markup {
    let change = may_change(f.who);
    page(
        f,
        html! {
            p { (s.objects) " managed objects." @if let Some(ca) = &s.client_ca { " Client CA: " code { (ca) } } }
            @if let Some(l) = &s.listener {
                h2 { "Listener" }
                pre { (serde_json::to_string_pretty(l).unwrap_or_default()) }
            }
            table {
                caption { "Objects by owner, type and state" }
                thead { tr { th scope="col" { "Owner" } th scope="col" { "Type" } th scope="col" { "State" } th scope="col" { "Objects" } } }
                tbody { @for o in &s.by_owner { tr { td { (o.owner) } td { (o.kind) } td { (o.state) } td { (o.count) } } } }
            }
            table {
                caption { "Client certificates" }
                thead { tr {
                    th scope="col" { "Identity" } th scope="col" { "Serial" } th scope="col" { "Issued" }
                    th scope="col" { "Expires" } th scope="col" { "Status" }
                } }
                tbody {
                    @for c in certs {
                        tr {
                            td { (c.identity) } td { code { (c.serial) } } td { (c.issued_at) }
                            td { (c.not_after.as_deref().unwrap_or("")) } td { (c.status) }
                        }
                    }
                }
            }
            @if change {
                form method="post" action="/ui/kmip/client-certs" class="card" {
                    h2 { "Issue a client certificate" }
                    (csrf(f.csrf))
                    label for="cert-name" { "Identity (the certificate's CN)" }
                    input id="cert-name" name="name" required;
                    label for="cert-days" { "Valid for (days)" }
                    input id="cert-days" name="days" type="number" min="1" value="365";
                    p class="help" { "Downloaded once as one PEM file: the certificate, then its private key." }
                    button type="submit" { "Issue and download" }
                }
                form method="post" action="/ui/kmip/revoke" class="card" {
                    h2 { "Revoke client certificates" }
                    (csrf(f.csrf))
                    label for="revoke-who" { "Identity or serial" }
                    input id="revoke-who" name="who" required;
                    button type="submit" class="danger" { "Revoke" }
                }
                form method="post" action="/ui/kmip/grant" class="card" {
                    h2 { "Grant or take back an object" }
                    (csrf(f.csrf))
                    label for="grant-uid" { "Object identifier (xks:/STORE/KEY for a key store's key)" }
                    input id="grant-uid" name="uid" required;
                    label for="grant-who" { "Identity (* for everyone)" }
                    input id="grant-who" name="identity" required;
                    label for="grant-what" { "Change" }
                    select id="grant-what" name="grant" {
                        option value="grant" { "grant" }
                        option value="ungrant" { "take back" }
                    }
                    button type="submit" { "Apply" }
                }
            }
        },
    )
}

/// Backups: made online, downloaded at once (they are sealed under the
/// root of trust: useless without it).
pub(super) fn backups(f: &Frame<'_>) -> Markup {
    page(
        f,
        html! {
            p { "A backup holds every table, its key material as wrapped as in the database: restoring it needs the root of trust (" code { "keyhold backup restore" } ")." }
            form method="post" action="/ui/backups" class="inline" {
                (csrf(f.csrf))
                button type="submit" { "Create and download a backup" }
            }
        },
    )
}

/// The audit chains' verification: intact, or where the problem is.
pub(super) fn audit_verify(f: &Frame<'_>, v: &AuditVerifyView) -> Markup {
    page(
        f,
        html! {
            p class=(if v.ok { "" } else { "error" }) role="status" {
                (if v.ok { "The audit log is intact." } else { "The audit log does NOT verify:" })
            }
            @if !v.problems.is_empty() { ul { @for p in &v.problems { li class="error" { (p) } } } }
            @if !v.warnings.is_empty() { ul { @for w in &v.warnings { li { (w) } } } }
            table {
                caption { "Chains (" (v.checkpoints_checked) " checkpoints compared)" }
                thead { tr { th scope="col" { "Chain" } th scope="col" { "Records" } th scope="col" { "Sequence" } } }
                tbody { @for c in &v.chains { tr { td { (c.chain) } td { (c.records) } td { (c.first_seq) "–" (c.last_seq) } } } }
            }
            p { a href="/ui/audit" { "Back to the search" } }
        },
    )
}

/// Policies: every scope that has one.
pub(super) fn policies(f: &Frame<'_>, list: &[PolicySummary]) -> Markup {
    page(
        f,
        html! {
            p { "Secondary authorization: rules that decide, per key store or key, which callers (principal, operation, service, VPC) may use its keys." }
            table {
                caption { "Policies" }
                thead { tr { th scope="col" { "Scope" } th scope="col" { "Rules" } } }
                tbody {
                    @for p in list {
                        tr {
                            td { a href=(policy_url(&p.scope)) { (p.scope) } }
                            td { (p.rules.map(|n| n.to_string()).unwrap_or_else(|| "does not verify".into())) }
                        }
                    }
                }
            }
            p class="help" { "A store's policy: open the store, then " em { "Policy" } "." }
        },
    )
}

/// The console URL of a policy scope as the API lists it (`store /a`,
/// `key /a k`).
fn policy_url(scope: &str) -> String {
    let mut parts = scope.split_whitespace();
    match (parts.next(), parts.next(), parts.next()) {
        (Some("key"), Some(s), Some(k)) => format!("{}/policy", key_url(s, k)),
        (_, Some(s), _) => format!("{}/policy", store_url(s)),
        _ => "/ui/policies".into(),
    }
}

/// One scope's policy: its text (editable by a custodian, with the
/// validation's message), and the panel that tests a request against it.
pub(super) fn policy(
    f: &Frame<'_>,
    action: &str,
    text: &str,
    problem: Option<&str>,
    decision: Option<&PolicyDecision>,
) -> Markup {
    page(
        f,
        html! {
            @if let Some(p) = problem { p class="error" role="alert" { (p) } }
            form method="post" action=(action) class="card" {
                (csrf(f.csrf))
                label for="text" { "Policy (TOML: [[rule]] name, effect, principal, kms_operation, via_service, source_vpc…)" }
                textarea id="text" name="text" rows="14" cols="80" readonly[!may_change(f.who)] { (text) }
                @if may_change(f.who) { button type="submit" { "Save" } }
            }
            form method="get" action={(action) "/test"} class="card filters" {
                h2 { "Test a request" }
                @for (name, label) in [("principal", "Principal (awsPrincipalArn)"), ("kms_operation", "KMS operation"), ("via_service", "Via service"), ("source_vpc", "Source VPC"), ("source_vpce", "Source VPC endpoint")] {
                    label for=(name) { (label) }
                    input id=(name) name=(name);
                }
                button type="submit" { "Test" }
            }
            @if let Some(d) = decision {
                p role="status" { strong { (d.decision) } @if let Some(r) = &d.rule { " (rule " (r) ")" } ": " (d.reason) }
            }
        },
    )
}

/// Audit search: every filter the CLI has, and the records found.
pub(super) fn audit(
    f: &Frame<'_>,
    filter: &[(&str, String)],
    records: &[serde_json::Value],
) -> Markup {
    let value = |name: &str| {
        filter
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    page(
        f,
        html! {
            form method="get" action="/ui/audit" class="card filters" role="search" {
                @for (name, label) in [
                    ("store", "Key store"), ("key", "Key"), ("principal", "Principal"),
                    ("operation", "Operation"), ("result", "Result (OK, error or a name)"),
                    ("kms_request_id", "KMS request id"), ("frontend", "Front-end (xks, kmip, admin, console)"),
                    ("since", "Since (RFC 3339)"), ("until", "Until (RFC 3339)"),
                    ("limit", "At most (records, newest first)"),
                ] {
                    label for=(name) { (label) }
                    input id=(name) name=(name) value=(value(name));
                }
                button type="submit" { "Search" }
                button type="submit" formaction="/ui/audit/export" { "Export these records" }
            }
            p { a href="/ui/audit/verify" { "Verify the audit log" } }
            table {
                caption { "Records (newest first)" }
                thead { tr {
                    th scope="col" { "Time" } th scope="col" { "Front-end" } th scope="col" { "Operation" }
                    th scope="col" { "Result" } th scope="col" { "Store / key" } th scope="col" { "Actor" }
                    th scope="col" { "Verified" } th scope="col" { "Record" }
                } }
                tbody {
                    @for r in records {
                        tr {
                            td { (crate::admin_ops::time(r["ts_ms"].as_i64().unwrap_or(0) / 1000)) }
                            td { (r["frontend"].as_str().unwrap_or("")) }
                            td { (r["operation"].as_str().unwrap_or("")) }
                            td { (r["result"].as_str().unwrap_or("")) }
                            td { (r["store"].as_str().unwrap_or("")) " " (r["key"].as_str().unwrap_or("")) }
                            td { (r["actor"].as_str().or(r["principal"].as_str()).unwrap_or("")) }
                            td { (if r["verified"].as_bool() == Some(true) { "yes" } else { "NO" }) }
                            td {
                                details {
                                    summary { "Details" }
                                    pre { (serde_json::to_string_pretty(r).unwrap_or_default()) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// The console's style sheet and script (served from the binary).
pub(super) const CSS: &str = include_str!("assets/console.css");
pub(super) const JS: &str = include_str!("assets/console.js");
