//! Planner tests: hand-checked cases and proptest properties against a
//! brute-force search over every contiguous split.

use super::*;
use proptest::prelude::{any, prop, prop_assert, prop_assert_eq, proptest, ProptestConfig};
use proptest::strategy::Strategy as PropStrategy;

fn fp(layers: &[u64], embedding: u64, head: u64, workspace: u64, tied: bool) -> Footprint {
    Footprint {
        layer_weight_bytes: layers.to_vec(),
        layer_kv_bytes: vec![0; layers.len()],
        embedding_bytes: embedding,
        head_bytes: head,
        tied_embeddings: tied,
        workspace_bytes: workspace,
    }
}

/// Every way to give each device a (possibly empty) contiguous run of layers.
fn all_counts(n: usize, devices: usize) -> Vec<Vec<usize>> {
    if devices == 1 {
        return vec![vec![n]];
    }
    let mut out = Vec::new();
    for first in 0..=n {
        for mut rest in all_counts(n - first, devices - 1) {
            rest.insert(0, first);
            out.push(rest);
        }
    }
    out
}

/// The best possible max load over all feasible contiguous splits.
fn brute_force_best(fp: &Footprint, devices: &[DeviceBudget]) -> Option<f64> {
    all_counts(fp.n_layer(), devices.len())
        .into_iter()
        .map(|c| build(fp, devices, &c))
        .filter(|p| {
            p.devices
                .iter()
                .zip(devices)
                .all(|(p, d)| p.total_bytes <= d.usable())
        })
        .map(|p| p.max_load(devices))
        .min_by(f64::total_cmp)
}

#[test]
fn equal_devices_split_evenly() {
    let f = fp(&[100; 12], 0, 0, 0, false);
    let devices = vec![
        DeviceBudget::new("a", 10_000),
        DeviceBudget::new("b", 10_000),
        DeviceBudget::new("c", 10_000),
    ];
    let p = plan(&f, &devices, &Strategy::Balance).unwrap();
    let ranges: Vec<_> = p.devices.iter().map(|d| d.layers.clone()).collect();
    assert_eq!(ranges, vec![0..4, 4..8, 8..12]);
}

#[test]
fn shares_follow_budgets() {
    let f = fp(&[100; 12], 0, 0, 0, false);
    let devices = vec![
        DeviceBudget::new("big", 30_000),
        DeviceBudget::new("small", 10_000),
    ];
    let p = plan(&f, &devices, &Strategy::Balance).unwrap();
    assert_eq!(p.devices[0].layers, 0..9);
    assert_eq!(p.devices[1].layers, 9..12);
}

#[test]
fn single_device_short_by_exact_bytes() {
    let f = fp(&[1000; 4], 500, 300, 200, false);
    let budget = 4000u64;
    let d = DeviceBudget::new("cpu", budget);
    let needed = 4 * 1000 + 500 + 300 + 200;
    match plan(&f, std::slice::from_ref(&d), &Strategy::Balance) {
        Err(PlacementError::DoesNotFit {
            device,
            short,
            needed: n,
            ..
        }) => {
            assert_eq!(device, "cpu");
            assert_eq!(n, needed);
            assert_eq!(short, needed - d.usable());
        }
        other => panic!("expected DoesNotFit, got {other:?}"),
    }
}

#[test]
fn overflow_lands_on_the_last_device() {
    // Device a fits 2 layers + embedding + workspace; b gets the other 3 + head.
    let f = fp(&[1000; 5], 100, 100, 0, false);
    let a = DeviceBudget::new("a", 2200);
    let b = DeviceBudget::new("b", 2000);
    let err = plan(&f, &[a.clone(), b.clone()], &Strategy::Balance).unwrap_err();
    let placed_on_a = (a.usable() - 100) / 1000; // 2 layers
    assert_eq!(placed_on_a, 2);
    let needed_b = 3 * 1000 + 100;
    assert_eq!(
        err,
        PlacementError::DoesNotFit {
            device: "b".into(),
            short: needed_b - b.usable(),
            needed: needed_b,
            usable: b.usable(),
            budget: 2000
        }
    );
    assert!(err.to_string().contains("device `b` is short by"));
}

#[test]
fn tied_head_costs_a_copy_only_on_a_separate_device() {
    let f = fp(&[100; 4], 1000, 10, 0, true);
    let one = plan(&f, &[DeviceBudget::new("a", 1_000_000)], &Strategy::Balance).unwrap();
    assert_eq!(one.devices[0].other_bytes, 1000 + 10);
    let two = plan(
        &f,
        &[
            DeviceBudget::new("a", 1_000_000),
            DeviceBudget::new("b", 1_000_000),
        ],
        &Strategy::Balance,
    )
    .unwrap();
    assert_eq!(two.devices[0].other_bytes, 1000);
    assert_eq!(two.devices[1].other_bytes, 1000 + 10);
}

#[test]
fn manual_override_is_honoured_or_refused() {
    let f = fp(&[100; 10], 0, 0, 0, false);
    let devices = vec![
        DeviceBudget::new("cuda:0", 100_000),
        DeviceBudget::new("cuda:1", 100_000),
        DeviceBudget::new("cpu", 100_000),
    ];
    let p = plan(
        &f,
        &devices,
        &Strategy::Manual(vec![("cuda:0".into(), 6), ("cuda:1".into(), 1)]),
    )
    .unwrap();
    let ranges: Vec<_> = p.devices.iter().map(|d| d.layers.clone()).collect();
    assert_eq!(ranges, vec![0..6, 6..7, 7..10]);

    let err = plan(&f, &devices, &Strategy::Manual(vec![("cuda:7".into(), 1)])).unwrap_err();
    assert_eq!(err, PlacementError::UnknownDevice("cuda:7".into()));
    let err = plan(&f, &devices, &Strategy::Manual(vec![("cuda:0".into(), 11)])).unwrap_err();
    assert_eq!(
        err,
        PlacementError::LayerCount {
            given: 11,
            n_layer: 10
        }
    );
    let err = plan(&f, &devices, &Strategy::Manual(vec![("cpu".into(), 3)])).unwrap_err();
    assert_eq!(
        err,
        PlacementError::LayerCount {
            given: 3,
            n_layer: 10
        }
    );

    let small = vec![
        DeviceBudget::new("cuda:0", 300),
        DeviceBudget::new("cpu", 100_000),
    ];
    let err = plan(&f, &small, &Strategy::Manual(vec![("cuda:0".into(), 5)])).unwrap_err();
    assert!(
        matches!(err, PlacementError::DoesNotFit { ref device, .. } if device == "cuda:0"),
        "{err}"
    );
}

#[test]
fn spill_device_idles_while_the_others_hold_the_model() {
    let f = fp(&[100; 10], 0, 0, 0, false);
    let devices = vec![
        DeviceBudget::new("cuda:0", 2_000),
        DeviceBudget::new("cpu", 100_000).spill(),
    ];
    let p = plan(&f, &devices, &Strategy::Balance).unwrap();
    assert_eq!(p.devices[0].layers, 0..10);
    assert_eq!(p.devices[1].layers, 10..10);
    // Without the spill mark the CPU's larger budget takes most layers.
    let even = [
        DeviceBudget::new("cuda:0", 2_000),
        DeviceBudget::new("cpu", 100_000),
    ];
    let p = plan(&f, &even, &Strategy::Balance).unwrap();
    assert!(p.devices[1].layers.len() > 5, "{p:?}");
}

#[test]
fn spill_device_takes_only_what_the_card_cannot_hold() {
    // 612 usable bytes on the card hold 6 layers of 100; 4 spill over.
    let f = fp(&[100; 10], 0, 0, 0, false);
    let devices = vec![
        DeviceBudget::new("cuda:0", 625),
        DeviceBudget::new("cpu", 100_000).spill(),
    ];
    let p = plan(&f, &devices, &Strategy::Balance).unwrap();
    assert_eq!(p.devices[0].layers, 0..6);
    assert_eq!(p.devices[1].layers, 6..10);
    // Two cards balance between themselves; the CPU still takes the rest.
    let devices = vec![
        DeviceBudget::new("cuda:0", 10_000),
        DeviceBudget::new("cuda:1", 10_000),
        DeviceBudget::new("cpu", 100_000).spill(),
    ];
    let p = plan(&f, &devices, &Strategy::Balance).unwrap();
    let counts: Vec<usize> = p.devices.iter().map(|d| d.layers.len()).collect();
    assert_eq!(counts, [5, 5, 0]);
    // Too little everywhere: the error names the last device.
    let small = vec![
        DeviceBudget::new("cuda:0", 300),
        DeviceBudget::new("cpu", 300).spill(),
    ];
    let err = plan(&f, &small, &Strategy::Balance).unwrap_err();
    assert!(matches!(err, PlacementError::DoesNotFit { ref device, .. } if device == "cpu"));
}

/// The fewest layers any feasible contiguous split puts on device `spill`.
fn brute_force_fewest_on(fp: &Footprint, devices: &[DeviceBudget], spill: usize) -> Option<usize> {
    all_counts(fp.n_layer(), devices.len())
        .into_iter()
        .filter(|c| {
            build(fp, devices, c)
                .devices
                .iter()
                .zip(devices)
                .all(|(p, d)| p.total_bytes <= d.usable())
        })
        .map(|c| c[spill])
        .min()
}

fn arb_case() -> impl PropStrategy<Value = (Footprint, Vec<DeviceBudget>)> {
    (
        prop::collection::vec(1u64..5_000, 1..9),
        prop::collection::vec(0u64..2_000, 1..9),
        0u64..3_000,
        0u64..3_000,
        0u64..1_000,
        any::<bool>(),
        prop::collection::vec(0u64..40_000, 1..4),
    )
        .prop_map(|(w, kv, emb, head, ws, tied, budgets)| {
            let n = w.len();
            let f = Footprint {
                layer_kv_bytes: (0..n).map(|i| kv[i % kv.len()]).collect(),
                layer_weight_bytes: w,
                embedding_bytes: emb,
                head_bytes: head,
                tied_embeddings: tied,
                workspace_bytes: ws,
            };
            let devices = budgets
                .iter()
                .enumerate()
                .map(|(i, &b)| DeviceBudget::new(format!("d{i}"), b))
                .collect();
            (f, devices)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn balanced_plans_are_valid_and_optimal((f, devices) in arb_case()) {
        let best = brute_force_best(&f, &devices);
        match plan(&f, &devices, &Strategy::Balance) {
            Ok(p) => {
                // Every layer exactly once, contiguous, in device order.
                let mut next = 0;
                for d in &p.devices {
                    prop_assert_eq!(d.layers.start, next);
                    next = d.layers.end;
                }
                prop_assert_eq!(next, f.n_layer());
                // No device over its usable budget.
                for (d, b) in p.devices.iter().zip(&devices) {
                    prop_assert!(d.total_bytes <= b.usable(), "{} over budget", d.label);
                    prop_assert_eq!(d.headroom, b.budget as i64 - d.total_bytes as i64);
                }
                // As balanced as the best contiguous split.
                let best = best.expect("a plan exists, so brute force finds one");
                prop_assert!(p.max_load(&devices) <= best * (1.0 + 1e-9) + 1e-12,
                    "max load {} worse than best {}", p.max_load(&devices), best);
            }
            Err(PlacementError::DoesNotFit { device, short, needed, usable, .. }) => {
                prop_assert!(best.is_none(), "planner failed where a split exists");
                prop_assert_eq!(&device, &devices.last().unwrap().label);
                prop_assert_eq!(short, needed - usable);
                prop_assert!(short > 0);
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    #[test]
    fn a_spill_device_takes_the_fewest_layers_possible(
        (f, mut devices) in arb_case(),
        pick in 0usize..4,
    ) {
        let spill = pick % devices.len();
        devices[spill] = devices[spill].clone().spill();
        let fewest = brute_force_fewest_on(&f, &devices, spill);
        match plan(&f, &devices, &Strategy::Balance) {
            Ok(p) => {
                for (d, b) in p.devices.iter().zip(&devices) {
                    prop_assert!(d.total_bytes <= b.usable(), "{} over budget", d.label);
                }
                prop_assert_eq!(p.devices.last().unwrap().layers.end, f.n_layer());
                let fewest = fewest.expect("a plan exists, so brute force finds one");
                prop_assert_eq!(p.devices[spill].layers.len(), fewest);
            }
            Err(PlacementError::DoesNotFit { .. }) => {
                prop_assert!(fewest.is_none(), "planner failed where a split exists");
            }
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }

    #[test]
    fn manual_plans_place_what_was_asked((f, devices) in arb_case(), first in 0usize..9) {
        let first = first.min(f.n_layer());
        let wanted = vec![(devices[0].label.clone(), first)];
        match plan(&f, &devices, &Strategy::Manual(wanted)) {
            Ok(p) => {
                if devices.len() > 1 {
                    prop_assert_eq!(p.devices[0].layers.clone(), 0..first);
                }
                prop_assert_eq!(p.devices.last().unwrap().layers.end, f.n_layer());
            }
            Err(PlacementError::DoesNotFit { short, .. }) => prop_assert!(short > 0),
            Err(PlacementError::LayerCount { .. }) => prop_assert!(devices.len() == 1 && first != f.n_layer()),
            Err(e) => prop_assert!(false, "unexpected error {e}"),
        }
    }
}
