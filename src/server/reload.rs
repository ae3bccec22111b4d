//! Live reconfiguration: a configuration file read again (SIGHUP) applied to the
//! running server, on the loop thread, between two event batches.
//!
//! Settings that the loop reads where it uses them (timeouts, `--rate`, `--max-line`)
//! change by replacing the server's copy of the configuration; those that a part keeps
//! (output caps in the connection table, per-IP limits and exempt ranges in
//! [`crate::abuse`], operators in access and the hub, the announce limit in the hub)
//! are handed to it through a setter. Whatever cannot change without a restart
//! (listeners, the database, the hasher's threads) keeps its value and is logged as
//! needing one. Reading the file and what it means is [`crate::config`]'s; re-reading
//! the password and certificate files is `Server::reload`'s, after this.

use std::time::Instant;

use log::{info, warn};

use super::accept;
use super::conns::OutputLimits;
use super::{Server, Timer};
use crate::config::ServerConfig;

/// The keys a running server takes on at once. Any other key whose value changes is
/// logged as needing a restart and keeps its value: a key added later stays there
/// until it is made live here (and a test holds this list to real keys).
pub(crate) const LIVE: &[&str] = &[
    // Paths re-read now (certificate and key only while a TLS listener is open).
    "tls-cert",
    "tls-key",
    "password-file",
    "admin",
    // Read where they are used, for each line, connection or timer.
    "max-line",
    "send-buffer",
    "max-clients",
    "register-timeout",
    "idle-timeout",
    "summary-interval",
    "linger",
    "rate",
    "burst",
    "redact-ips",
    // The connection table's output limits.
    "max-output",
    "max-output-soft",
    "slow-grace",
    "max-output-total",
    "msg-in-rate",
    "msg-in-burst",
    "coalesce",
    // The hub.
    "announce-limit",
    // Per-IP abuse control.
    "ip-rate",
    "ip-burst",
    "max-strikes",
    "strike-decay",
    "ban-time",
    "max-bans",
    "max-conns-per-ip",
    "connect-rate",
    "connect-burst",
    "exempt",
];

impl Server {
    /// Applies `new` (the configuration file read again) to the running server: each
    /// changed key that can change live is logged at `info` and applied; each changed
    /// key that needs a restart is logged at `warn` and keeps its value. Connections
    /// open now keep what they already have (a deadline set, a TLS session); limits
    /// apply from their next check.
    pub(super) fn apply_config(&mut self, new: ServerConfig, now: Instant) {
        let (before, after) = match (self.config.to_table(), new.to_table()) {
            (Ok(before), Ok(after)) => (before, after),
            (Err(e), _) | (_, Err(e)) => {
                return warn!("reload: {e}; nothing changed");
            }
        };
        // Under --redact-ips the log names the keys only: some values are addresses.
        let redact = self.config.redact_ips || new.redact_ips;
        let show = |value: Option<&toml::Value>| match value {
            _ if redact => "[redacted]".to_string(),
            Some(value) => value.to_string(),
            None => "unset".to_string(),
        };
        let mut next = after.clone();
        let mut changed = 0;
        for key in ServerConfig::keys() {
            let (was, is) = (before.get(&key), after.get(&key));
            if was == is {
                continue;
            }
            // The certificate can only be swapped under a TLS listener that is open.
            let tls_ok = !key.starts_with("tls-") || (self.tls.is_some() && is.is_some());
            if LIVE.contains(&key.as_str()) && tls_ok {
                info!("reload: {key} = {} (was {})", show(is), show(was));
                changed += 1;
                continue;
            }
            warn!(
                "reload: {key} needs a restart; keeping {} (the file says {})",
                show(was),
                show(is)
            );
            match was {
                Some(value) => next.insert(key, value.clone()),
                None => next.remove(&key),
            };
        }
        if changed == 0 {
            return info!("reload: no setting changed");
        }
        let mut next = match ServerConfig::from_table(next) {
            Ok(next) => next,
            Err(e) => return warn!("reload: {e}; nothing changed"),
        };
        next.config_file = new.config_file;
        next.overrides = new.overrides;
        next.handle_signals = self.config.handle_signals;
        let old = std::mem::replace(&mut self.config, next);
        let config = &self.config;

        self.conns.set_limits(OutputLimits::of(config));
        // New browser connections take the new line cap as their message cap.
        self.web = std::sync::Arc::new(crate::web::WebConfig {
            origins: self.web.origins.clone(),
            max_message: config.max_line,
        });
        let open: Vec<_> = self
            .conns
            .ids_where(|_| true)
            .into_iter()
            .filter_map(|id| self.conns.get(id).map(|c| c.peer().ip()))
            .collect();
        self.abuse.set_limits(config, &open, now);
        self.hub.set_announce_limit(config.announce_limit);
        self.access.set_admins(&config.admins);
        let access = &self.access;
        self.hub.set_admins(|name| access.is_admin(name));
        if config.password_file.is_none() && old.password_file.is_some() {
            warn!("reload: no password-file: connections need no server password now");
        }
        self.access.set_password_file(config.password_file.clone());
        if let (Some(tls), Some(cert), Some(key)) =
            (&mut self.tls, &config.tls_cert, &config.tls_key)
        {
            tls.cert = cert.clone();
            tls.key = key.clone();
        }
        if config.max_clients != old.max_clients {
            (self.max_clients, _) = accept::client_cap(config.max_clients);
        }
        // A summary timer already armed picks the new interval up when it fires.
        if old.summary_interval.is_zero()
            && let Some(at) = now.checked_add(config.summary_interval)
            && !config.summary_interval.is_zero()
        {
            self.timers.insert(at, Timer::Summary);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_live_key_is_a_key() {
        let keys = ServerConfig::keys();
        for key in LIVE {
            assert!(keys.iter().any(|k| k == key), "{key} is not a key");
        }
    }
}
