//! The resource flags every command that loads a model or serves shares:
//! the mode and each of its figures, and the config file. Values stay text
//! here; `resources::settings` parses every source the same way, so flag,
//! environment and file values get the same checks and messages.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Args;

use crate::resources::settings::{ConfigFile, Resolved, SettingsError, Sources};

#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Resources (flag > STRATA_* environment > config file > mode)")]
pub struct ResourceArgs {
    /// conservative (desktop volunteers), default, aggressive (servers).
    #[arg(long, value_name = "MODE")]
    pub mode: Option<String>,
    /// Most of each GPU's memory (and of system memory) to plan for, in
    /// percent [modes: 50 / 70 / 95].
    #[arg(long, value_name = "PERCENT")]
    pub vram_cap: Option<String>,
    /// Bytes kept back from each GPU's capped share [512MiB / 256MiB / 0].
    #[arg(long, value_name = "SIZE")]
    pub vram_reserve: Option<String>,
    /// Minimum interval between the starts of two requests [100ms / 50ms / 0].
    #[arg(long, value_name = "DURATION")]
    pub throttle: Option<String>,
    /// Minimum pause between decode steps, to cap GPU duty cycle [0].
    #[arg(long, value_name = "DURATION")]
    pub decode_pause: Option<String>,
    /// Most requests in flight; more get "busy, retry" [2 / 8 / 32].
    #[arg(long, value_name = "N")]
    pub max_in_flight: Option<String>,
    /// Process nice value, -20 to 19, or `keep` [19 / 10 / keep].
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub nice: Option<String>,
    /// I/O priority: idle, best-effort:N, realtime:N, keep [idle / best-effort:7 / keep].
    #[arg(long, value_name = "CLASS")]
    pub io_priority: Option<String>,
    /// Stop taking requests while other processes crowd a GPU [on / on / off].
    #[arg(long, value_name = "on|off")]
    pub desktop_yield: Option<String>,
    /// How far other processes' GPU use must fall, in percent of the GPU,
    /// before a yielding worker resumes [5].
    #[arg(long, value_name = "PERCENT")]
    pub yield_hysteresis: Option<String>,
    /// How often GPU memory is sampled for yielding [1s / 2s / 5s].
    #[arg(long, value_name = "DURATION")]
    pub sample_interval: Option<String>,
    /// TOML config file; its `[resources]` table takes the same keys
    /// (`vram_cap = 60`).
    #[arg(long, value_name = "FILE", env = "STRATA_CONFIG")]
    pub config: Option<PathBuf>,
}

impl ResourceArgs {
    fn flags(&self) -> BTreeMap<&'static str, String> {
        let all = [
            ("mode", &self.mode),
            ("vram_cap", &self.vram_cap),
            ("vram_reserve", &self.vram_reserve),
            ("throttle", &self.throttle),
            ("decode_pause", &self.decode_pause),
            ("max_in_flight", &self.max_in_flight),
            ("nice", &self.nice),
            ("io_priority", &self.io_priority),
            ("desktop_yield", &self.desktop_yield),
            ("yield_hysteresis", &self.yield_hysteresis),
            ("sample_interval", &self.sample_interval),
        ];
        all.into_iter()
            .filter_map(|(k, v)| Some((k, v.clone()?)))
            .collect()
    }

    /// The settings in effect: these flags over the process environment
    /// over the config file over the mode's figures.
    pub fn resolve(&self) -> Result<Resolved, SettingsError> {
        let file = self.config.as_deref().map(ConfigFile::read).transpose()?;
        let env = |k: &str| std::env::var(k).ok();
        Sources {
            flags: self.flags(),
            env: &env,
            file: file.as_ref(),
        }
        .resolve()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::settings::SETTINGS;

    /// A setting added to `SETTINGS` without a flag would be silently
    /// unreachable from the command line.
    #[test]
    fn every_setting_has_a_flag() {
        let mut args = ResourceArgs::default();
        for s in [
            &mut args.mode,
            &mut args.vram_cap,
            &mut args.vram_reserve,
            &mut args.throttle,
            &mut args.decode_pause,
            &mut args.max_in_flight,
            &mut args.nice,
            &mut args.io_priority,
            &mut args.desktop_yield,
            &mut args.yield_hysteresis,
            &mut args.sample_interval,
        ] {
            *s = Some("x".into());
        }
        let flags = args.flags();
        for def in &SETTINGS {
            assert!(flags.contains_key(def.key), "no flag for `{}`", def.key);
        }
        assert_eq!(flags.len(), SETTINGS.len());
    }
}
