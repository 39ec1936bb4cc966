//! Resource settings: the three modes and their figures, and the layering
//! of overrides.
//!
//! Every setting has one name used everywhere: the TOML key in the
//! `[resources]` table of the config file (`vram_cap`), the environment
//! variable (`STRATA_VRAM_CAP`) and the flag (`--vram-cap`). Precedence,
//! highest first: flag > environment > config file > the mode's default.
//! The mode itself is chosen the same way, before the other settings fall
//! back to its figures. Every source is parsed by the same function, so a
//! bad value gets the same message (naming the setting, where it came from,
//! the allowed range and the value) whatever its source.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use super::budget::{BudgetPolicy, Percent};
use super::priority::IoPriority;
use crate::devices::parse_bytes;

/// How much of the machine a worker takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Desktop volunteers: half the VRAM, lowest priority, yields to the desktop.
    Conservative,
    /// Mixed use.
    Default,
    /// Servers: nearly all VRAM, no throttle, normal priority, never yields.
    Aggressive,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Conservative, Mode::Default, Mode::Aggressive];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Conservative => "conservative",
            Mode::Default => "default",
            Mode::Aggressive => "aggressive",
        }
    }

    /// The mode's figures (the table in DESIGN.md, section resources).
    pub fn defaults(self) -> ResourceSettings {
        const MIB: u64 = 1 << 20;
        match self {
            Mode::Conservative => ResourceSettings {
                mode: self,
                vram_cap: Percent::whole(50),
                vram_reserve: 512 * MIB,
                throttle: Duration::from_millis(100),
                decode_pause: Duration::ZERO,
                max_in_flight: 2,
                nice: Some(19),
                io_priority: Some(IoPriority::Idle),
                desktop_yield: true,
                yield_hysteresis: Percent::whole(5),
                sample_interval: Duration::from_secs(1),
            },
            Mode::Default => ResourceSettings {
                mode: self,
                vram_cap: Percent::whole(70),
                vram_reserve: 256 * MIB,
                throttle: Duration::from_millis(50),
                decode_pause: Duration::ZERO,
                max_in_flight: 8,
                nice: Some(10),
                io_priority: Some(IoPriority::BestEffort(7)),
                desktop_yield: true,
                yield_hysteresis: Percent::whole(5),
                sample_interval: Duration::from_secs(2),
            },
            Mode::Aggressive => ResourceSettings {
                mode: self,
                vram_cap: Percent::whole(95),
                vram_reserve: 0,
                throttle: Duration::ZERO,
                decode_pause: Duration::ZERO,
                max_in_flight: 32,
                nice: None,
                io_priority: None,
                desktop_yield: false,
                yield_hysteresis: Percent::whole(5),
                sample_interval: Duration::from_secs(5),
            },
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Everything the resource manager enforces.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ResourceSettings {
    pub mode: Mode,
    /// Most of a GPU's memory Strata may plan for (also applied to system
    /// memory for the CPU device).
    pub vram_cap: Percent,
    /// Bytes kept back from each GPU's capped share.
    pub vram_reserve: u64,
    /// Minimum interval between the starts of two requests.
    #[serde(with = "millis")]
    pub throttle: Duration,
    /// Minimum pause between two decode steps (caps the GPU duty cycle).
    #[serde(with = "millis")]
    pub decode_pause: Duration,
    /// Most requests admitted at once; beyond it callers are told to retry.
    pub max_in_flight: usize,
    /// Nice value for the whole process; `None` keeps the inherited one.
    pub nice: Option<i32>,
    /// I/O priority for the whole process; `None` keeps the inherited one.
    pub io_priority: Option<IoPriority>,
    /// Stop admitting work while other processes crowd a GPU.
    pub desktop_yield: bool,
    /// How far below its trigger other processes' use must fall before a
    /// yielding worker resumes, as a share of the GPU's memory.
    pub yield_hysteresis: Percent,
    /// How often device memory is sampled for yielding.
    #[serde(with = "millis")]
    pub sample_interval: Duration,
}

impl ResourceSettings {
    /// A setting's value as a person would write it (`70%`, `50ms`, `keep`).
    pub fn value_text(&self, key: &str) -> String {
        let duration = |d: Duration| {
            if d.is_zero() {
                "0".to_string()
            } else {
                humantime::format_duration(d).to_string()
            }
        };
        let keep = |v: Option<String>| v.unwrap_or_else(|| "keep".into());
        match key {
            "mode" => self.mode.to_string(),
            "vram_cap" => self.vram_cap.to_string(),
            "vram_reserve" => crate::devices::HumanBytes(self.vram_reserve).to_string(),
            "throttle" => duration(self.throttle),
            "decode_pause" => duration(self.decode_pause),
            "max_in_flight" => self.max_in_flight.to_string(),
            "nice" => keep(self.nice.map(|n| n.to_string())),
            "io_priority" => keep(self.io_priority.map(|p| p.to_string())),
            "desktop_yield" => if self.desktop_yield { "on" } else { "off" }.into(),
            "yield_hysteresis" => self.yield_hysteresis.to_string(),
            "sample_interval" => duration(self.sample_interval),
            other => format!("(unknown setting `{other}`)"),
        }
    }

    /// The budgets these settings give devices listed without one.
    pub fn budget_policy(&self) -> BudgetPolicy {
        BudgetPolicy {
            cap: self.vram_cap,
            reserve: self.vram_reserve,
        }
    }
}

mod millis {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }
}

/// One overridable setting: its key and what it accepts.
pub struct SettingDef {
    pub key: &'static str,
    pub expected: &'static str,
}

/// All settings, in the order they are resolved and shown (mode first).
pub const SETTINGS: [SettingDef; 11] = [
    SettingDef {
        key: "mode",
        expected: "one of conservative, default, aggressive",
    },
    SettingDef {
        key: "vram_cap",
        expected: "a percentage from 0 to 100",
    },
    SettingDef {
        key: "vram_reserve",
        expected: "a size from 0 to 1TiB, like 512MiB",
    },
    SettingDef {
        key: "throttle",
        expected: "a duration from 0 to 60s, like 50ms",
    },
    SettingDef {
        key: "decode_pause",
        expected: "a duration from 0 to 10s, like 5ms",
    },
    SettingDef {
        key: "max_in_flight",
        expected: "a whole number from 1 to 4096",
    },
    SettingDef {
        key: "nice",
        expected: "a whole number from -20 to 19, or `keep`",
    },
    SettingDef {
        key: "io_priority",
        expected: "`idle`, `best-effort:N` or `realtime:N` with N from 0 to 7, or `keep`",
    },
    SettingDef {
        key: "desktop_yield",
        expected: "`on` or `off` (also true/false)",
    },
    SettingDef {
        key: "yield_hysteresis",
        expected: "a percentage from 0 to 50",
    },
    SettingDef {
        key: "sample_interval",
        expected: "a duration from 100ms to 60s",
    },
];

/// The environment variable of a setting: `vram_cap` → `STRATA_VRAM_CAP`.
pub fn env_name(key: &str) -> String {
    format!("STRATA_{}", key.to_ascii_uppercase())
}

/// The flag of a setting: `vram_cap` → `--vram-cap`.
pub fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    Flag,
    Env,
    File(PathBuf),
    ModeDefault,
}

impl Source {
    /// Where the value of `key` came from, for messages and listings.
    pub fn describe(&self, key: &str) -> String {
        match self {
            Source::Flag => format!("flag {}", flag_name(key)),
            Source::Env => format!("environment {}", env_name(key)),
            Source::File(p) => format!("{} [resources] {key}", p.display()),
            Source::ModeDefault => "the mode's default".into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("`{key}` (from {origin}) must be {expected}, got `{value}`")]
    Invalid {
        key: &'static str,
        origin: String,
        expected: &'static str,
        value: String,
    },
    #[error("config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
}

/// A parsed config file: the `[resources]` table as strings per key.
#[derive(Debug, Clone, Default)]
pub struct ConfigFile {
    pub path: PathBuf,
    values: BTreeMap<String, String>,
}

/// Top-level tables a config file may have.
const FILE_TABLES: [&str; 1] = ["resources"];

impl ConfigFile {
    pub fn read(path: &Path) -> Result<Self, SettingsError> {
        let text = std::fs::read_to_string(path).map_err(|e| SettingsError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Self, SettingsError> {
        let file_err = |reason: String| SettingsError::File {
            path: path.to_path_buf(),
            reason,
        };
        let table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| file_err(e.message().to_string()))?;
        let mut values = BTreeMap::new();
        for (name, item) in &table {
            if SETTINGS.iter().any(|s| s.key == name) {
                return Err(file_err(format!(
                    "`{name}` must be inside the [resources] table"
                )));
            }
            if !FILE_TABLES.contains(&name.as_str()) {
                return Err(file_err(format!(
                    "unknown table `{name}`; known: {}",
                    FILE_TABLES.join(", ")
                )));
            }
            let toml::Value::Table(resources) = item else {
                return Err(file_err(format!("`{name}` must be a table")));
            };
            for (key, value) in resources {
                if !SETTINGS.iter().any(|s| s.key == key) {
                    let known: Vec<&str> = SETTINGS.iter().map(|s| s.key).collect();
                    return Err(file_err(format!(
                        "unknown setting `{key}` in [{name}]; known: {}",
                        known.join(", ")
                    )));
                }
                let text = match value {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    other => {
                        return Err(file_err(format!(
                            "`{key}` must be a string or a number, got a {}",
                            other.type_str()
                        )))
                    }
                };
                values.insert(key.clone(), text);
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            values,
        })
    }
}

/// The sources to resolve settings from.
pub struct Sources<'a> {
    /// Values given as flags, by setting key.
    pub flags: BTreeMap<&'static str, String>,
    /// Looks up an environment variable (`std::env::var` in the binary, a
    /// map in tests).
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub file: Option<&'a ConfigFile>,
}

/// Resolved settings and where each value came from.
#[derive(Debug, Clone, Serialize)]
pub struct Resolved {
    pub settings: ResourceSettings,
    pub sources: BTreeMap<&'static str, Source>,
}

impl Sources<'_> {
    fn lookup(&self, key: &'static str) -> Option<(Source, String)> {
        if let Some(v) = self.flags.get(key) {
            return Some((Source::Flag, v.clone()));
        }
        if let Some(v) = (self.env)(&env_name(key)) {
            return Some((Source::Env, v));
        }
        let file = self.file?;
        file.values
            .get(key)
            .map(|v| (Source::File(file.path.clone()), v.clone()))
    }

    /// Resolves every setting, refusing the first invalid value.
    pub fn resolve(&self) -> Result<Resolved, SettingsError> {
        let mut sources = BTreeMap::new();
        let mode = match self.lookup("mode") {
            Some((source, value)) => {
                let mode = parse_setting("mode", &source, &value, parse_mode)?;
                sources.insert("mode", source);
                mode
            }
            None => {
                sources.insert("mode", Source::ModeDefault);
                Mode::Default
            }
        };
        let mut s = mode.defaults();
        for def in &SETTINGS[1..] {
            let key = def.key;
            let Some((source, value)) = self.lookup(key) else {
                sources.insert(key, Source::ModeDefault);
                continue;
            };
            let v = value.as_str();
            let src = &source;
            match key {
                "vram_cap" => s.vram_cap = parse_setting(key, src, v, |v| v.parse().ok())?,
                "vram_reserve" => {
                    s.vram_reserve =
                        parse_setting(key, src, v, |v| parse_bytes(v).filter(|b| *b <= 1 << 40))?
                }
                "throttle" => s.throttle = parse_setting(key, src, v, duration_upto(60_000))?,
                "decode_pause" => {
                    s.decode_pause = parse_setting(key, src, v, duration_upto(10_000))?
                }
                "max_in_flight" => {
                    s.max_in_flight = parse_setting(key, src, v, |v| {
                        v.trim().parse().ok().filter(|n| (1..=4096).contains(n))
                    })?
                }
                "nice" => s.nice = parse_setting(key, src, v, parse_nice)?,
                "io_priority" => s.io_priority = parse_setting(key, src, v, parse_io_priority)?,
                "desktop_yield" => s.desktop_yield = parse_setting(key, src, v, parse_switch)?,
                "yield_hysteresis" => {
                    s.yield_hysteresis = parse_setting(key, src, v, |v| {
                        v.parse().ok().filter(|p| *p <= Percent::whole(50))
                    })?
                }
                "sample_interval" => {
                    s.sample_interval = parse_setting(key, src, v, |v| {
                        duration_upto(60_000)(v).filter(|d| *d >= Duration::from_millis(100))
                    })?
                }
                other => unreachable!("setting `{other}` has no parser"),
            }
            sources.insert(key, source);
        }
        Ok(Resolved {
            settings: s,
            sources,
        })
    }
}

fn parse_setting<T>(
    key: &'static str,
    source: &Source,
    value: &str,
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, SettingsError> {
    parse(value).ok_or_else(|| SettingsError::Invalid {
        key,
        origin: source.describe(key),
        expected: SETTINGS
            .iter()
            .find(|s| s.key == key)
            .map_or("valid", |s| s.expected),
        value: value.to_string(),
    })
}

fn parse_mode(v: &str) -> Option<Mode> {
    Mode::ALL
        .into_iter()
        .find(|m| m.name().eq_ignore_ascii_case(v.trim()))
}

fn duration_upto(max_ms: u64) -> impl Fn(&str) -> Option<Duration> {
    move |v| {
        humantime::parse_duration(v.trim())
            .ok()
            .filter(|d| *d <= Duration::from_millis(max_ms))
    }
}

fn parse_nice(v: &str) -> Option<Option<i32>> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("keep") {
        return Some(None);
    }
    v.parse().ok().filter(|n| (-20..=19).contains(n)).map(Some)
}

fn parse_io_priority(v: &str) -> Option<Option<IoPriority>> {
    let v = v.trim();
    if v.eq_ignore_ascii_case("keep") {
        return Some(None);
    }
    v.parse().ok().map(Some)
}

fn parse_switch(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
