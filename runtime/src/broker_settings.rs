//! Where `spool serve` takes its broker settings from, in rising precedence: Kafka's defaults,
//! a `server.properties` (`--config-file`), `SPOOL_`-prefixed environment variables under Kafka's
//! names (`SPOOL_LOG_RETENTION_HOURS`), `--override name=value`, then Spool's own flags.

use std::path::Path;

use anyhow::{bail, Context, Result};
use spool_core::settings::{setting_of_env, BrokerSettings};

/// Reads a `server.properties` file into (name, value) pairs, in file order.
pub fn read_properties(path: &Path) -> Result<Vec<(String, String)>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut pairs = Vec::new();
    java_properties::PropertiesIter::new(std::io::BufReader::new(file))
        .read_into(|name, value| pairs.push((name, value)))
        .with_context(|| format!("reading {}", path.display()))?;
    Ok(pairs)
}

/// Builds the settings. `environment` is every variable of the process; `own_variables` are
/// the ones Spool's flags read themselves; `flags` are the flags given, as Kafka settings.
pub fn load(
    config_file: Option<&Path>,
    environment: impl IntoIterator<Item = (String, String)>,
    own_variables: &[String],
    overrides: &[String],
    flags: &[(&str, String)],
) -> Result<BrokerSettings> {
    let mut settings = BrokerSettings::default();
    if let Some(path) = config_file {
        for (name, value) in read_properties(path)? {
            settings.set(&name, &value).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        }
    }
    let mut environment: Vec<(String, String)> =
        environment.into_iter().filter(|(k, _)| k.starts_with("SPOOL_")).collect();
    environment.sort();
    for (variable, value) in environment {
        match setting_of_env(&variable) {
            Some(name) => settings.set(name, &value).map_err(|e| anyhow::anyhow!("{variable}: {e}"))?,
            None if own_variables.contains(&variable) => {}
            None => tracing::warn!("{variable} names no Kafka broker setting Spool knows; ignored"),
        }
    }
    for item in overrides {
        let Some((name, value)) = item.split_once('=') else {
            bail!("--override {item:?} is not NAME=VALUE");
        };
        settings.set(name, value).map_err(|e| anyhow::anyhow!("--override {item}: {e}"))?;
    }
    for (name, value) in flags {
        settings.set(name, value).map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    settings.check().map_err(|e| anyhow::anyhow!(e))?;
    let ignored = settings.ignored_but_set();
    if !ignored.is_empty() {
        tracing::info!("accepted with no effect in Spool: {}", ignored.join(", "));
    }
    Ok(settings)
}

/// HOST:PORT of the first listener in Kafka's `NAME://HOST:PORT,...` form that is not one of
/// `controller_names` (an empty host, as in `PLAINTEXT://:9092`, listens on every address).
pub fn first_listener(listeners: &str, controller_names: &str) -> Result<String> {
    listener_entries(listeners)
        .find(|(name, _)| !is_controller(name, controller_names))
        .map(|(_, address)| address)
        .ok_or_else(|| anyhow::anyhow!("no listener for clients in {listeners:?}"))
}

/// HOST:PORT of the listener named in `controller.listener.names`, if `listeners` has one.
pub fn controller_listener(listeners: &str, controller_names: &str) -> Option<String> {
    listener_entries(listeners).find(|(name, _)| is_controller(name, controller_names)).map(|(_, address)| address)
}

fn is_controller(name: &str, controller_names: &str) -> bool {
    !name.is_empty() && controller_names.split(',').any(|n| n.trim() == name)
}

/// (NAME, HOST:PORT) of each listener; a bare HOST:PORT has no name.
fn listener_entries(listeners: &str) -> impl Iterator<Item = (String, String)> + '_ {
    listeners.split(',').map(str::trim).filter(|l| !l.is_empty()).map(|listener| {
        let (name, address) = listener.split_once("://").unwrap_or(("", listener));
        let address = if address.starts_with(':') { format!("0.0.0.0{address}") } else { address.to_string() };
        (name.to_string(), address)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile_path::TempPath {
        tempfile_path::TempPath::with(text)
    }

    mod tempfile_path {
        pub struct TempPath(pub std::path::PathBuf);
        impl TempPath {
            pub fn with(text: &str) -> Self {
                let path = std::env::temp_dir().join(format!(
                    "spool-settings-{}-{}.properties",
                    std::process::id(),
                    text.len()
                ));
                std::fs::write(&path, text).unwrap();
                TempPath(path)
            }
        }
        impl Drop for TempPath {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    #[test]
    fn later_sources_win_and_unknown_names_are_refused() {
        let props = file("# Kafka's own\nnum.partitions=3\nlog.retention.hours = 2\nnum.network.threads=3\n");
        let env = [("SPOOL_NUM_PARTITIONS".to_string(), "4".to_string()), ("SPOOL_BIN".to_string(), "x".to_string())];
        let settings = load(Some(&props.0), env.clone(), &[], &["log.retention.hours=5".into()], &[]).unwrap();
        assert_eq!(settings.get("num.partitions"), Some("4"));
        assert_eq!(settings.get("log.retention.hours"), Some("5"));
        assert_eq!(settings.ignored_but_set(), ["num.network.threads"]);
        let flags = [("num.partitions", "6".to_string())];
        assert_eq!(load(Some(&props.0), env, &[], &[], &flags).unwrap().get("num.partitions"), Some("6"));
        let bad = file("log.retention.hourz=1\n\n\n");
        let error = load(Some(&bad.0), [], &[], &[], &[]).unwrap_err().to_string();
        assert!(error.contains("log.retention.hourz"), "{error}");
        assert!(load(None, [], &[], &["num.partitions".into()], &[]).is_err());
        let contradicting =
            ["group.min.session.timeout.ms=9000".to_string(), "group.max.session.timeout.ms=8000".to_string()];
        assert!(load(None, [], &[], &contradicting, &[]).is_err());
    }

    #[test]
    fn listeners_read_as_kafka_writes_them() {
        assert_eq!(first_listener("PLAINTEXT://localhost:9092", "CONTROLLER").unwrap(), "localhost:9092");
        assert_eq!(first_listener("PLAINTEXT://:9092,CONTROLLER://:9093", "CONTROLLER").unwrap(), "0.0.0.0:9092");
        assert_eq!(first_listener("CONTROLLER://:9093,PLAINTEXT://:9092", "CONTROLLER").unwrap(), "0.0.0.0:9092");
        assert_eq!(first_listener("127.0.0.1:9092", "CONTROLLER").unwrap(), "127.0.0.1:9092");
        assert!(first_listener("", "CONTROLLER").is_err());
        assert!(first_listener("CONTROLLER://:9093", "CONTROLLER").is_err());
        assert_eq!(
            controller_listener("PLAINTEXT://:9092,CONTROLLER://h:9093", "CONTROLLER").as_deref(),
            Some("h:9093")
        );
        assert_eq!(controller_listener("PLAINTEXT://:9092", "CONTROLLER"), None);
    }
}
