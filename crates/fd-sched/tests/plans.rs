//! Key-step plans: presets, groups, call counts, and every validation error.

use fd_sched::methods::Reuse;
use fd_sched::{KeySteps, Plan, PlanSpec};

fn keys(spec: &str, n: usize) -> Vec<usize> {
    KeySteps::parse(spec).unwrap().resolve(n).unwrap()
}

fn err(spec: &str, n: usize) -> String {
    match KeySteps::parse(spec) {
        Err(e) => e.to_string(),
        Ok(k) => k.resolve(n).unwrap_err().to_string(),
    }
}

#[test]
fn presets_match_the_paper() {
    assert_eq!(keys("50ls", 50), vec![0, 1, 2, 3, 5, 10, 15, 25, 35]);
    assert_eq!(keys("50ls", 20), vec![0, 1, 2, 3, 5, 10, 15]);
    assert_eq!(keys("50ls2", 50), vec![0, 10, 11, 12, 15, 20, 25, 30, 35, 45]);
    assert_eq!(keys("50ls3", 50), vec![0, 20, 25, 30, 35, 45, 46, 47, 48, 49]);
    assert_eq!(keys("50ls4", 50), vec![0, 9, 13, 14, 15, 28, 29, 32, 36, 45]);
    assert_eq!(&keys("pro", 100)[..11], &[0, 2, 5, 9, 14, 20, 27, 35, 44, 54, 65]);
    let s2 = keys("s2", 50);
    assert!(s2.contains(&19) && !s2.contains(&21) && s2.contains(&22) && s2.contains(&41));
    let ls100 = keys("100ls", 100);
    assert!(ls100.contains(&9) && !ls100.contains(&11) && ls100.contains(&15) && ls100.contains(&86));
    // FasterDiffusion-DiT's DiT-XL/2 set: 166 key steps of 250 DDPM steps
    let dit = keys("dit250", 250);
    assert_eq!((dit.len(), &dit[..8], dit.last()), (166, &[0, 1, 2, 3, 4, 5, 6, 10][..], Some(&249)));
    assert!(!dit.contains(&7) && !dit.contains(&248));
    assert_eq!(keys("uniform:4", 10), vec![0, 4, 8]);
    assert_eq!(keys("none", 5), vec![0, 1, 2, 3, 4]);
    assert_eq!(keys("0, 3,7", 10), vec![0, 3, 7]);
}

#[test]
fn groups_and_counts() {
    let p = Plan::new(KeySteps::parse("50ls").unwrap(), 50).unwrap();
    let sizes: Vec<usize> = p.groups.iter().map(|g| g.len()).collect();
    assert_eq!(sizes, vec![1, 1, 1, 2, 5, 5, 10, 10, 15]);
    assert_eq!((p.encoder_calls(), p.decoder_calls()), (9, 50));
    assert!(!p.is_baseline());
    // encoder 1/3 of the FLOPs: 50 * 3 / (9 * 1 + 50 * 2)
    assert!((p.flops_speedup(1, 2) - 150.0 / 109.0).abs() < 1e-12);
    assert!(Plan::new(KeySteps::None, 50).unwrap().is_baseline());
}

#[test]
fn validation_errors_are_clear() {
    let e = err("1,2,3", 10);
    assert!(e.contains("step 0 must be a key step"), "{e}");
    let e = err("0,5,12", 10);
    assert!(e.contains("step index 12 out of range") && e.contains("10-step"), "{e}");
    let e = err("0,3,3", 10);
    assert!(e.contains("listed twice"), "{e}");
    let e = err("uniform:0", 10);
    assert!(e.contains(">= 1"), "{e}");
    let e = err("uniform:x", 10);
    assert!(e.contains("not a positive integer"), "{e}");
    let e = err("fastest", 10);
    assert!(e.contains("key steps `fastest`") && e.contains("50ls"), "{e}");
    let e = err("", 10);
    assert!(e.contains("empty"), "{e}");
    let e = err("0,a", 10);
    assert!(e.contains("`a` is not a step index"), "{e}");
    let e = err("none", 0);
    assert!(e.contains("0 steps"), "{e}");
    let e = fd_sched::Injection::parse("0.003").unwrap_err().to_string();
    assert!(e.contains("C@TAU"), "{e}");
    let e = fd_sched::Injection::parse("0.003@2").unwrap_err().to_string();
    assert!(e.contains("C@TAU"), "{e}");
    let i = fd_sched::Injection::parse("0.003@0.5:after").unwrap();
    assert_eq!((i.strength, i.tau, i.when), (0.003, 0.5, fd_sched::InjectWhen::After));
}

#[test]
fn deepcache_plans_take_the_official_id_and_keep_the_block_form() {
    use fd_sched::methods::deepcache::{Cut, DeepCache};
    let p = Plan::parse("deepcache:3", 10).unwrap();
    assert_eq!(p.spec, PlanSpec::DeepCache(DeepCache { interval: 3, cut: Cut::Id(None) }));
    assert_eq!((p.spec.to_string(), p.label()), ("deepcache:3".to_string(), "deepcache:3:0".to_string()));
    let p = Plan::parse("deepcache:2:4", 10).unwrap();
    assert_eq!(p.spec, PlanSpec::DeepCache(DeepCache { interval: 2, cut: Cut::Id(Some(4)) }));
    assert_eq!(p.key_steps, vec![0, 2, 4, 6, 8]);
    let p = Plan::parse("deepcache-block:3:1", 10).unwrap();
    assert_eq!(p.spec, PlanSpec::DeepCache(DeepCache { interval: 3, cut: Cut::Block(1) }));
    assert_eq!(p.label(), "deepcache-block:3:1");
    let e = Plan::parse("deepcache:2:x", 10).unwrap_err().to_string();
    assert!(e.contains("cache_branch_id") && e.contains("deepcache:2:x"), "{e}");
}

#[test]
fn adaptive_plans_parse_with_the_official_defaults() {
    use fd_sched::methods::Adaptive;
    let p = Plan::parse("adaptive:0.01", 50).unwrap();
    assert_eq!(p.spec, PlanSpec::Adaptive(Adaptive { threshold: 0.01, max_skip: None }));
    assert_eq!(p.label(), "adaptive:0.01:4");
    assert!(!p.is_baseline(), "every step may run, but it is not the plain sampler");
    assert_eq!(Plan::parse("adaptive:0.05:6", 50).unwrap().label(), "adaptive:0.05:6");
    for bad in ["adaptive:x", "adaptive:0", "adaptive:-1", "adaptive:0.01:0", "adaptive:nan"] {
        let e = Plan::parse(bad, 50).unwrap_err().to_string();
        assert!(e.contains(bad), "{bad}: {e}");
    }
    let e = Plan::parse("adaptive:0.01+forecast:1", 50).unwrap_err().to_string();
    assert!(e.contains("`+forecast:1`") && e.contains("encoder-propagation"), "{e}");
}

#[test]
fn teacache_and_fbcache_plans_parse() {
    use fd_sched::methods::{FbCache, TeaCache};
    let p = Plan::parse("teacache:0.1", 50).unwrap();
    assert_eq!(p.spec, PlanSpec::TeaCache(TeaCache { threshold: 0.1, residual: false }));
    assert_eq!(p.label(), "teacache:0.1");
    assert!(p.is_dynamic() && !p.is_baseline());
    let p = Plan::parse("fbcache:0.05:residual", 50).unwrap();
    assert_eq!(p.spec, PlanSpec::FbCache(FbCache { threshold: 0.05, residual: true }));
    assert_eq!(p.label(), "fbcache:0.05:residual");
    for bad in
        ["teacache:", "teacache:x", "teacache:0", "fbcache:-0.1", "fbcache:inf", "fbcache:0.1:resid", "teacache:0.1:2"]
    {
        let e = Plan::parse(bad, 50).unwrap_err().to_string();
        assert!(e.contains(bad), "{bad}: {e}");
    }
    assert!(Plan::parse("fbcache:0.1+forecast:1", 50).is_err(), "forecast is for encoder propagation");
}

#[test]
fn magcache_plans_parse_with_diffusers_defaults() {
    use fd_sched::methods::MagCache;
    let p = Plan::parse("magcache:0.06", 50).unwrap();
    assert_eq!(p.spec, PlanSpec::MagCache(MagCache { threshold: 0.06, max_skip_steps: None, retention_ratio: None }));
    assert_eq!((p.spec.to_string(), p.label()), ("magcache:0.06".into(), "magcache:0.06:3:0.2".into()));
    assert!(p.is_dynamic() && !p.is_baseline());
    assert_eq!(Plan::parse("magcache:0.1:2", 50).unwrap().label(), "magcache:0.1:2:0.2");
    for bad in [
        "magcache",
        "magcache:",
        "magcache:0",
        "magcache:x",
        "magcache:0.1:0",
        "magcache:0.1:1.5",
        "magcache:0.1:2:1.2",
        "magcache:0.1::0.2",
        "magcache:0.1:2:0.2:9",
    ] {
        let e = Plan::parse(bad, 50).unwrap_err().to_string();
        assert!(e.contains(bad), "{bad}: {e}");
    }
    assert!(Plan::parse("magcache:0.1+forecast:1", 50).is_err(), "forecast is for encoder propagation");
}

/// The schedule is diffusers' MagCacheHeadHook's: retention steps first, then skips while the
/// accumulated error |1 - product of ratios| stays within T, at most K in a row.
#[test]
fn magcache_schedules_follow_the_ratios() {
    use fd_sched::methods::MagCache;
    let spec = |r: Vec<f64>| fd_model::MagCacheSpec { mag_ratios: r, fit: None };
    let plan = |s: &str| match s.parse::<PlanSpec>().unwrap() {
        PlanSpec::MagCache(m) => m,
        _ => unreachable!(),
    };
    // ratios exactly 1: every step after the retained ones skips, K in a row then one computes
    let flat = spec(vec![1.0; 10]);
    let got: Vec<u8> = plan("magcache:0.01:2:0.2").schedule(&flat, 10).into_iter().map(u8::from).collect();
    assert_eq!(got, [1, 1, 0, 0, 1, 0, 0, 1, 0, 0]);
    // ratio 1.1 per step: errors 0.1, 0.31 (accumulated), ...: T = 0.2 allows one skip at a time
    let grow = spec(vec![1.1; 10]);
    let got: Vec<u8> = plan("magcache:0.2:5:0").schedule(&grow, 10).into_iter().map(u8::from).collect();
    assert_eq!(got, [1, 0, 1, 0, 1, 0, 1, 0, 1, 0]);
    // resampled to the run's step count as diffusers' nearest_interp: index round(i * 2) of 3 -> 2 steps
    assert_eq!(spec(vec![1.0, 2.0, 3.0]).ratios_for(2), vec![1.0, 3.0]);
    assert_eq!(spec(vec![1.0, 2.0, 3.0]).ratios_for(5), vec![1.0, 1.0, 2.0, 3.0, 3.0]);
    assert_eq!(
        MagCache { threshold: 1.0, max_skip_steps: None, retention_ratio: Some(1.0) }.schedule(&flat, 7),
        vec![true; 7]
    );
}

#[test]
fn taylorseer_plans_parse_with_diffusers_defaults() {
    use fd_sched::methods::TaylorSeer;
    let p = Plan::parse("taylorseer:5", 50).unwrap();
    assert_eq!(
        p.spec,
        PlanSpec::TaylorSeer(TaylorSeer { cache_interval: 5, before: None, max_order: None, dtype: None })
    );
    assert_eq!((p.spec.to_string(), p.label()), ("taylorseer:5".into(), "taylorseer:5:3:1:bf16".into()));
    assert_eq!(Plan::parse("taylorseer:4:2", 50).unwrap().label(), "taylorseer:4:2:1:bf16");
    for bad in [
        "taylorseer",
        "taylorseer:0",
        "taylorseer:x",
        "taylorseer:5:0",
        "taylorseer:5:3:-1",
        "taylorseer:5:3:1:f64",
        "taylorseer:5::1",
        "taylorseer:5:3:1:bf16:2",
    ] {
        let e = Plan::parse(bad, 50).unwrap_err().to_string();
        assert!(e.contains(bad), "{bad}: {e}");
    }
    // diffusers' TaylorSeerCacheHook: B warm-up steps, then (i - B - 1) mod N == 0 (step B forecasts)
    let sched = |s: &str| match s.parse::<PlanSpec>().unwrap() {
        PlanSpec::TaylorSeer(t) => t.schedule(12).into_iter().map(u8::from).collect::<Vec<_>>(),
        _ => unreachable!(),
    };
    assert_eq!(sched("taylorseer:5"), [1, 1, 1, 0, 1, 0, 0, 0, 0, 1, 0, 0]);
    assert_eq!(sched("taylorseer:1:2"), [1; 12]);
    assert_eq!(sched("taylorseer:3:1"), [1, 0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1]);
}

#[test]
fn pab_plans_parse_with_diffusers_defaults() {
    use fd_sched::methods::Pab;
    let p = Plan::parse("pab:2", 50).unwrap();
    assert_eq!(p.spec, PlanSpec::Pab(Pab { skip_range: 2, timestep_range: None }));
    assert_eq!((p.spec.to_string(), p.label()), ("pab:2".into(), "pab:2:100:800".into()));
    assert_eq!(Plan::parse("pab:3:50:950.5", 50).unwrap().label(), "pab:3:50:950.5");
    for bad in ["pab", "pab:1", "pab:x", "pab:2:100", "pab:2:800:100", "pab:2:a:b", "pab:2:100:800:3"] {
        let e = Plan::parse(bad, 50).unwrap_err().to_string();
        assert!(e.contains(bad), "{bad}: {e}");
    }
    // diffusers' PyramidAttentionBroadcastHook: the first step, steps outside (LO, HI), every N-th
    let PlanSpec::Pab(pab) = "pab:3".parse::<PlanSpec>().unwrap() else { unreachable!() };
    let ts = [999.0, 900.0, 799.0, 700.0, 600.0, 500.0, 400.0, 100.0, 50.0];
    let got: Vec<u8> = pab.schedule(&ts).into_iter().map(u8::from).collect();
    assert_eq!(got, [1, 1, 0, 1, 0, 0, 1, 1, 1]);
}

#[test]
fn fastercache_plans_parse_with_diffusers_defaults() {
    use fd_sched::methods::FasterCache;
    let p = Plan::parse("fastercache:5", 50).unwrap();
    assert_eq!(
        p.spec,
        PlanSpec::FasterCache(FasterCache { uncond_skip: 5, attention_skip: None, attention_weight: None })
    );
    assert_eq!((p.spec.to_string(), p.label()), ("fastercache:5".into(), "fastercache:5:2:0.5".into()));
    for bad in [
        "fastercache",
        "fastercache:1",
        "fastercache:5:1",
        "fastercache:5:2:1.5",
        "fastercache:5::0.5",
        "fastercache:5:2:0.5:1",
    ] {
        let e = Plan::parse(bad, 50).unwrap_err().to_string();
        assert!(e.contains(bad), "{bad}: {e}");
    }
    // diffusers' hooks: full steps = the first, outside (-1, 641), every U-th; attention on the
    // conditional-only steps outside (-1, 681) or every A-th
    let PlanSpec::FasterCache(fc) = "fastercache:3".parse::<PlanSpec>().unwrap() else { unreachable!() };
    let ts = [900.0, 700.0, 660.0, 600.0, 500.0, 400.0, 300.0];
    let got: Vec<(u8, u8)> = fc.schedule(&ts).into_iter().map(|(a, b)| (u8::from(a), u8::from(b))).collect();
    assert_eq!(got, [(1, 1), (1, 1), (1, 1), (1, 1), (0, 1), (0, 0), (1, 1)]);
}

/// Encoder propagation + TaylorSeer (`KEYS+taylorseer[:O]`); the step-deciding methods are refused
/// as modifiers by name.
#[test]
fn key_steps_combine_with_taylorseer_and_refuse_methods_that_pick_their_own_steps() {
    let p = Plan::parse("50ls+taylorseer", 50).unwrap();
    assert_eq!((p.label(), p.spec.family()), ("50ls+taylorseer".into(), "ours+taylorseer"));
    assert_eq!(Plan::parse("uniform:3+taylorseer:2", 50).unwrap().label(), "uniform:3+taylorseer:2");
    for (bad, want) in [
        ("50ls+taylorseer:x", "TaylorSeer order `x`"),
        ("50ls+taylorseer:", "TaylorSeer order ``"),
        ("50ls+forecast:1+taylorseer", "does not combine with +forecast:1"),
        ("50ls+magcache:0.1", "MagCache (diffusers' MagCacheConfig) decides its own steps"),
        ("uniform:2+pab:2", "decides its own steps"),
        ("50ls+tgate:10", "run `tgate:G[:SP[:FI[:W]]]` as a plan of its own"),
        ("50ls+cache", "unknown plan modifier"),
    ] {
        let e = Plan::parse(bad, 50).unwrap_err().to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
}

#[test]
fn tgate_plans_parse_with_the_official_defaults() {
    use fd_sched::methods::TGate;
    let p = Plan::parse("tgate:10", 25).unwrap();
    let want = TGate { gate_step: 10, sp_interval: None, fi_interval: None, warm_up: None };
    assert_eq!(p.spec, PlanSpec::TGate(want));
    assert_eq!((p.spec.to_string(), p.label()), ("tgate:10".to_string(), "tgate:10:5:1:2".to_string()));
    assert!(!p.is_baseline() && !p.is_dynamic());
    assert_eq!(Plan::parse("tgate:1:1:1:0", 4).unwrap().label(), "tgate:1:1:1:0");
    assert_eq!("tgate:7:3".parse::<PlanSpec>().unwrap().to_string(), "tgate:7:3", "given parameters only");
    for (bad, want) in [
        ("tgate:0", "outside 1..=25"),
        ("tgate:26", "outside 1..=25"),
        ("tgate:10:0", "intervals"),
        ("tgate:10:5:0", "intervals"),
        ("tgate:x", "not a step count"),
        ("tgate:1:2:3:4:5", "tgate:G[:SP[:FI[:W]]]"),
    ] {
        let e = Plan::parse(bad, 25).unwrap_err().to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
}

#[test]
fn partial_propagation_parses_as_an_encoder_propagation_modifier() {
    let p = Plan::parse("50ls+partial:1", 50).unwrap();
    let PlanSpec::Propagation(prop) = &p.spec else { panic!("{:?}", p.spec) };
    assert_eq!((prop.reuse, p.label()), (Reuse::Partial { id: 1 }, "50ls+partial:1".to_string()));
    assert_eq!(p.key_steps, Plan::parse("50ls", 50).unwrap().key_steps, "the key steps are the plan's");
    for (bad, want) in [
        ("50ls+partial:x", "cache_branch_id"),
        ("deepcache:2+partial:1", "apply to encoder-propagation plans"),
        ("50ls+forecast:1+partial:1", "`+partial:1`: does not combine with +forecast:1"),
        ("50ls+partial:1+forecast:1", "`+forecast:1`: does not combine with +partial:1"),
    ] {
        let e = Plan::parse(bad, 50).unwrap_err().to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
}

#[test]
fn doubled_or_unknown_modifiers_are_refused_by_name() {
    for (bad, want) in [
        ("50ls+forecast:1+forecast:2", "`+forecast:2`: given twice (already +forecast:1)"),
        ("50ls+partial:0+partial:0", "`+partial:0`: given twice (already +partial:0)"),
        ("50ls+forecast:3", "`+forecast:3`: forecast order 3"),
        ("50ls+cache:1", "`+cache:1`: unknown plan modifier"),
        ("50ls+", "`+`: unknown plan modifier"),
        ("tgate:10+partial:0", "`+partial:0`: plan modifiers"),
    ] {
        let e = bad.parse::<PlanSpec>().unwrap_err().to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
    // a bare method name, alone or with a modifier (found by the CLI fuzz test: it panicked)
    for m in fd_sched::methods::METHODS.iter().skip(1) {
        for bad in [m.name.to_string(), format!("{}+partial:0", m.name)] {
            let e = bad.parse::<PlanSpec>().unwrap_err().to_string();
            assert!(e.contains(m.name), "{bad}: {e}");
        }
    }
}

/// One plan per method and form (every parameter given or left out, each modifier): printed and
/// parsed again it is the same typed value, and the string is what the user wrote.
#[test]
fn every_plan_reads_back_as_written() {
    let written = [
        "none",
        "uniform:3",
        "50ls",
        "0,1,2,5",
        "plan.json",
        "auto:9",
        "auto:threshold=0.5",
        "runtime:9",
        "50ls+forecast:1",
        "auto:9+forecast:2",
        "runtime:9+forecast:1",
        "50ls+partial:0",
        "auto:9+partial:4",
        "decoder-prop:50ls",
        "decoder-prop:uniform:3",
        "deepcache:2",
        "deepcache:3:4",
        "deepcache-block:3:1",
        "adaptive:0.01",
        "adaptive:0.05:6",
        "teacache:0.1",
        "teacache:0.05:residual",
        "fbcache:0.2",
        "fbcache:0.1:residual",
        "magcache:0.06",
        "magcache:0.1:2",
        "magcache:0.1:2:0.3",
        "taylorseer:5",
        "taylorseer:5:2",
        "taylorseer:5:2:2",
        "taylorseer:5:2:2:f32",
        "pab:2",
        "pab:3:50:950",
        "fastercache:5",
        "fastercache:5:3",
        "fastercache:5:3:0.25",
        "50ls+taylorseer",
        "uniform:4+taylorseer:2",
        "tgate:10",
        "tgate:10:5",
        "tgate:10:5:1",
        "tgate:10:5:1:2",
    ];
    let mut seen = std::collections::BTreeSet::new();
    for w in written {
        let spec: PlanSpec = w.parse().unwrap_or_else(|e| panic!("{w}: {e}"));
        assert_eq!(spec.to_string(), w, "printed back");
        assert_eq!(spec.to_string().parse::<PlanSpec>().unwrap(), spec, "{w}: typed round trip");
        let json = serde_json::to_string(&spec).unwrap();
        assert_eq!(json, format!("\"{w}\""), "serde writes the string");
        assert_eq!(serde_json::from_str::<PlanSpec>(&json).unwrap(), spec);
        seen.insert(spec.info().name);
    }
    let all: std::collections::BTreeSet<&str> = fd_sched::methods::METHODS.iter().map(|m| m.name).collect();
    assert_eq!(seen, all, "every method of the table is covered");
}

#[test]
fn the_method_table_names_every_family_and_generates_the_help() {
    let help = PlanSpec::help();
    for m in fd_sched::methods::METHODS {
        assert!(help.contains(m.syntax), "{}", m.syntax);
        assert!(!m.families.is_empty() && !m.help.is_empty(), "{}", m.name);
        for f in m.families {
            assert_eq!(fd_sched::methods::family_rgb(f.name), Some(f.rgb), "{}", f.name);
        }
    }
    let family = |s: &str| s.parse::<PlanSpec>().unwrap().family();
    assert_eq!(
        [
            "none",
            "50ls",
            "auto:9+forecast:1",
            "deepcache:2",
            "adaptive:0.1",
            "teacache:0.1",
            "fbcache:0.1",
            "magcache:0.1",
            "taylorseer:5",
            "pab:2",
            "fastercache:5",
            "tgate:3"
        ]
        .map(family),
        [
            "baseline",
            "ours",
            "auto",
            "deepcache",
            "adaptive",
            "teacache",
            "fbcache",
            "magcache",
            "taylorseer",
            "pab",
            "fastercache",
            "tgate"
        ]
    );
}

/// Run records keep the method in the form run identities were computed from (`config.json`
/// `plan.method`): parameters in the method's order, defaults filled in.
#[test]
fn method_records_keep_their_form() {
    let rec = |s: &str| serde_json::to_string(&s.parse::<PlanSpec>().unwrap().record()).unwrap();
    assert_eq!(rec("50ls+forecast:1"), r#""encoder_propagation""#);
    assert_eq!(rec("decoder-prop:50ls"), r#""decoder_propagation""#);
    assert_eq!(rec("deepcache:2"), r#"{"deep_cache_id":{"id":0}}"#);
    assert_eq!(rec("deepcache-block:2:1"), r#"{"deep_cache":{"branch":1}}"#);
    assert_eq!(rec("adaptive:0.01"), r#"{"adaptive":{"threshold":0.01,"max_skip":4}}"#);
    assert_eq!(rec("teacache:0.1"), r#"{"step_cache":{"rule":"teacache","threshold":0.1,"residual":false}}"#);
    assert_eq!(rec("tgate:10"), r#"{"t_gate":{"gate_step":10,"sp_interval":5,"fi_interval":1,"warm_up":2}}"#);
    assert_eq!(rec("magcache:0.06"), r#"{"magcache":{"threshold":0.06,"max_skip_steps":3,"retention_ratio":0.2}}"#);
    assert_eq!(
        rec("taylorseer:5"),
        r#"{"taylorseer":{"cache_interval":5,"disable_cache_before_step":3,"max_order":1,"taylor_factors_dtype":"bf16"}}"#
    );
    assert_eq!(
        rec("pab:2"),
        r#"{"pab":{"spatial_attention_block_skip_range":2,"spatial_attention_timestep_skip_range":[100.0,800.0]}}"#
    );
    assert_eq!(
        rec("fastercache:5"),
        r#"{"fastercache":{"unconditional_batch_skip_range":5,"spatial_attention_block_skip_range":2,"attention_weight":0.5}}"#
    );
    for s in [
        "fastercache:4:3",
        "pab:3:50:950",
        "taylorseer:4:2:2:f32",
        "magcache:0.1:2",
        "tgate:10",
        "adaptive:0.01",
        "50ls",
        "teacache:0.1",
        "fbcache:0.2:residual",
        "deepcache:2",
        "decoder-prop:50ls",
    ] {
        let spec = s.parse::<PlanSpec>().unwrap();
        let r = spec.record();
        let text = serde_json::to_string(&r).unwrap();
        let back: fd_sched::MethodRecord = serde_json::from_str(&text).unwrap();
        assert_eq!(back, r, "{s}");
        // read through serde_json::Value (its maps are sorted): the method's order comes back
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let back: fd_sched::MethodRecord = serde_json::from_value(value).unwrap();
        assert_eq!(serde_json::to_string(&back).unwrap(), text, "{s}");
        // the record's name and parameters are the table's
        let (name, fields) = spec.info().record;
        match &r {
            fd_sched::MethodRecord::Name(n) => assert_eq!((n.as_str(), fields.len()), (name, 0), "{s}"),
            fd_sched::MethodRecord::Params(n, p) => {
                assert_eq!(n, name, "{s}");
                assert_eq!(p.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), fields.to_vec(), "{s}");
            }
        }
    }
}

#[test]
fn runtime_key_steps_parse_with_a_budget() {
    let p = Plan::parse("runtime:9", 50).unwrap();
    assert_eq!((p.label(), p.key_steps.clone()), ("runtime:9".to_string(), vec![0]));
    assert!(p.is_dynamic() && !p.is_baseline());
    assert_eq!(Plan::parse("runtime:9+forecast:1", 50).unwrap().label(), "runtime:9+forecast:1");
    for (bad, want) in
        [("runtime:0", ">= 1"), ("runtime:x", "not a budget"), ("runtime:51", "exceeds the sampler's 50")]
    {
        let e = Plan::parse(bad, 50).unwrap_err().to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
}

/// The book's plan reference (docs/plans.md, between its `plan-table` markers) is generated from the
/// method table ([`fd_sched::methods::reference_markdown`]). When it differs, this test writes the
/// generated table into the book and fails, so the regenerated page is reviewed and committed (CI,
/// on a clean clone, fails until it is).
#[test]
fn the_book_plan_table_is_generated_from_the_method_table() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/plans.md");
    let book = std::fs::read_to_string(path).unwrap();
    let (begin, end) = (
        "<!-- plan-table: generated from the method table by crates/fd-sched/tests/plans.rs -->\n",
        "<!-- end of plan-table -->",
    );
    let start = book.find(begin).expect("docs/plans.md has the plan-table begin marker") + begin.len();
    let stop = start + book[start..].find(end).expect("docs/plans.md has the plan-table end marker");
    let generated = fd_sched::methods::reference_markdown();
    if book[start..stop] != generated {
        std::fs::write(path, format!("{}{generated}{}", &book[..start], &book[stop..])).unwrap();
        panic!("docs/plans.md's plan table was out of date with the method table: regenerated, review and commit it");
    }
}

/// A resolved plan's label (what run records store) parses back as the same plan with every
/// parameter given, and prints as the label again.
#[test]
fn labels_parse_as_the_filled_plan() {
    for w in [
        "none",
        "uniform:3",
        "50ls",
        "0",
        "0,1,2,5",
        "runtime:9+forecast:1",
        "50ls+partial:0",
        "decoder-prop:uniform:3",
        "deepcache:2",
        "deepcache-block:3:1",
        "adaptive:0.01",
        "teacache:0.05:residual",
        "fbcache:0.2",
        "magcache:0.1",
        "taylorseer:5:2",
        "pab:2",
        "fastercache:5",
        "tgate:10",
        "tgate:10:5",
    ] {
        let plan = Plan::parse(w, 50).unwrap();
        let filled = plan.spec.filled();
        assert_eq!(filled.to_string(), plan.label(), "{w}");
        assert_eq!(filled.resolve(50).unwrap().label(), plan.label(), "{w}");
        assert_eq!(filled.filled(), filled, "{w}: filling is idempotent");
    }
}

/// Numbers of `auto:` rules are checked when parsed, before any calibration run.
#[test]
fn auto_rules_refuse_bad_numbers_when_parsed() {
    for (bad, want) in [
        ("auto:0", "K = 0"),
        ("auto:x", "not an integer"),
        ("auto:threshold=NaN", "finite"),
        ("auto:threshold=inf", "finite"),
        ("auto:threshold=-1", ">= 0"),
        ("auto:9+forecast:1+forecast:1", "given twice"),
    ] {
        let e = bad.parse::<PlanSpec>().unwrap_err().to_string();
        assert!(e.contains(want), "{bad}: {e}");
    }
}
