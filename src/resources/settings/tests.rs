//! Layering and validation of the resource settings.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::*;

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
    let map: BTreeMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |k| map.get(k).cloned()
}

fn resolve(
    flags: &[(&'static str, &str)],
    env: &[(&str, &str)],
    file: Option<&str>,
) -> Result<Resolved, SettingsError> {
    let env = env_of(env);
    let file = file.map(|t| ConfigFile::parse(Path::new("strata.toml"), t).unwrap());
    Sources {
        flags: flags.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        env: &env,
        file: file.as_ref(),
    }
    .resolve()
}

#[test]
fn nothing_given_is_the_default_mode() {
    let r = resolve(&[], &[], None).unwrap();
    assert_eq!(r.settings, Mode::Default.defaults());
    assert!(r.sources.values().all(|s| *s == Source::ModeDefault));
    assert_eq!(r.sources.len(), SETTINGS.len());
}

#[test]
fn the_modes_carry_the_design_figures() {
    let c = Mode::Conservative.defaults();
    let d = Mode::Default.defaults();
    let a = Mode::Aggressive.defaults();
    assert_eq!(
        [c.vram_cap, d.vram_cap, a.vram_cap],
        [50, 70, 95].map(Percent::whole)
    );
    assert_eq!(
        [c.throttle, d.throttle, a.throttle],
        [100, 50, 0].map(Duration::from_millis)
    );
    assert_eq!([c.nice, d.nice, a.nice], [Some(19), Some(10), None]);
    assert_eq!(
        [c.io_priority, d.io_priority, a.io_priority],
        [
            Some(IoPriority::Idle),
            Some(IoPriority::BestEffort(7)),
            None
        ]
    );
    assert!(c.desktop_yield && d.desktop_yield && !a.desktop_yield);
    assert!(c.max_in_flight < d.max_in_flight && d.max_in_flight < a.max_in_flight);
}

#[test]
fn flag_beats_env_beats_file_beats_mode() {
    let file = "[resources]\nvram_cap = 55\nthrottle = \"10ms\"\nnice = 5\nmax_in_flight = 3\n";
    let env = [("STRATA_VRAM_CAP", "60"), ("STRATA_THROTTLE", "20ms")];
    let flags = [("vram_cap", "65")];
    let r = resolve(&flags, &env, Some(file)).unwrap();
    assert_eq!(r.settings.vram_cap, Percent::whole(65));
    assert_eq!(r.sources["vram_cap"], Source::Flag);
    assert_eq!(r.settings.throttle, Duration::from_millis(20));
    assert_eq!(r.sources["throttle"], Source::Env);
    assert_eq!(r.settings.nice, Some(5));
    assert_eq!(r.sources["nice"], Source::File("strata.toml".into()));
    assert_eq!(r.settings.max_in_flight, 3);
    assert_eq!(r.settings.io_priority, Some(IoPriority::BestEffort(7)));
    assert_eq!(r.sources["io_priority"], Source::ModeDefault);
}

#[test]
fn the_mode_is_layered_first_and_its_figures_fill_the_rest() {
    let file = "[resources]\nmode = \"aggressive\"\n";
    let r = resolve(&[], &[("STRATA_MODE", "conservative")], Some(file)).unwrap();
    assert_eq!(r.settings.mode, Mode::Conservative);
    assert_eq!(r.settings.vram_cap, Percent::whole(50));
    let r = resolve(&[("throttle", "0")], &[], Some(file)).unwrap();
    assert_eq!(r.settings.mode, Mode::Aggressive);
    assert_eq!(r.settings.vram_cap, Percent::whole(95));
    assert_eq!(r.settings.throttle, Duration::ZERO);
    let r = resolve(
        &[
            ("nice", "keep"),
            ("io_priority", "keep"),
            ("mode", "Conservative"),
        ],
        &[],
        None,
    )
    .unwrap();
    assert_eq!((r.settings.nice, r.settings.io_priority), (None, None));
    assert!(r.settings.desktop_yield);
}

#[test]
fn every_setting_parses_its_documented_forms() {
    let flags = [
        ("vram_cap", "62.5%"),
        ("vram_reserve", "1GiB"),
        ("throttle", "1s"),
        ("decode_pause", "5ms"),
        ("max_in_flight", "4096"),
        ("nice", "-20"),
        ("io_priority", "realtime:0"),
        ("desktop_yield", "off"),
        ("yield_hysteresis", "0"),
        ("sample_interval", "100ms"),
    ];
    let s = resolve(&flags, &[], None).unwrap().settings;
    assert_eq!(s.vram_cap.basis_points(), 6250);
    assert_eq!(s.vram_reserve, 1 << 30);
    assert_eq!(s.throttle, Duration::from_secs(1));
    assert_eq!(s.decode_pause, Duration::from_millis(5));
    assert_eq!(s.max_in_flight, 4096);
    assert_eq!(s.nice, Some(-20));
    assert_eq!(s.io_priority, Some(IoPriority::Realtime(0)));
    assert!(!s.desktop_yield);
    assert_eq!(s.yield_hysteresis, Percent::ZERO);
    assert_eq!(s.sample_interval, Duration::from_millis(100));
}

#[test]
fn invalid_values_name_the_setting_its_source_the_range_and_the_value() {
    type Case<'a> = (
        &'a [(&'static str, &'a str)],
        &'a [(&'a str, &'a str)],
        &'a str,
    );
    let cases: [Case; 10] = [
        (&[("vram_cap", "150")], &[], "`vram_cap` (from flag --vram-cap) must be a percentage from 0 to 100, got `150`"),
        (&[], &[("STRATA_VRAM_CAP", "-1")], "`vram_cap` (from environment STRATA_VRAM_CAP) must be a percentage from 0 to 100, got `-1`"),
        (&[("mode", "turbo")], &[], "`mode` (from flag --mode) must be one of conservative, default, aggressive, got `turbo`"),
        (&[("nice", "20")], &[], "must be a whole number from -20 to 19, or `keep`, got `20`"),
        (&[("max_in_flight", "0")], &[], "`max_in_flight` (from flag --max-in-flight) must be a whole number from 1 to 4096, got `0`"),
        (&[("throttle", "2m")], &[], "`throttle` (from flag --throttle) must be a duration from 0 to 60s, like 50ms, got `2m`"),
        (&[("sample_interval", "10ms")], &[], "must be a duration from 100ms to 60s, got `10ms`"),
        (&[("io_priority", "best-effort:9")], &[], "`io_priority` (from flag --io-priority)"),
        (&[("desktop_yield", "maybe")], &[], "must be `on` or `off` (also true/false), got `maybe`"),
        (&[("yield_hysteresis", "60")], &[], "must be a percentage from 0 to 50, got `60`"),
    ];
    for (flags, env, want) in cases {
        let e = resolve(flags, env, None).unwrap_err().to_string();
        assert!(e.contains(want), "{e}\n  wanted: {want}");
    }
    let e = resolve(&[], &[], Some("[resources]\nvram_reserve = \"2TiB\"\n")).unwrap_err();
    assert!(
        e.to_string()
            .contains("`vram_reserve` (from strata.toml [resources] vram_reserve)"),
        "{e}"
    );
}

#[test]
fn config_files_refuse_unknown_keys_tables_and_types() {
    let bad = [
        ("[resources]\nvram_kap = 50\n", "unknown setting `vram_kap`"),
        ("[resource]\nvram_cap = 50\n", "unknown table `resource`"),
        (
            "vram_cap = 50\n",
            "`vram_cap` must be inside the [resources] table",
        ),
        ("resources = 5\n", "`resources` must be a table"),
        (
            "[resources]\nvram_cap = [50]\n",
            "must be a string or a number, got a array",
        ),
        ("[resources\n", "strata.toml"),
    ];
    for (text, want) in bad {
        let e = ConfigFile::parse(Path::new("strata.toml"), text)
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{e}\n  wanted: {want}");
        assert!(e.starts_with("config file strata.toml"), "{e}");
    }
    let e = ConfigFile::read(Path::new("/nonexistent/strata.toml")).unwrap_err();
    assert!(e.to_string().contains("/nonexistent/strata.toml"), "{e}");
    let ok = "[resources]\ndesktop_yield = false\nvram_cap = 80.5\n";
    let r = resolve(&[], &[], Some(ok)).unwrap();
    assert!(!r.settings.desktop_yield);
    assert_eq!(r.settings.vram_cap.basis_points(), 8050);
}

#[test]
fn names_follow_one_scheme() {
    assert_eq!(env_name("vram_cap"), "STRATA_VRAM_CAP");
    assert_eq!(flag_name("max_in_flight"), "--max-in-flight");
}
