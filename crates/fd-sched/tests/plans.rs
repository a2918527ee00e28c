//! Key-step plans: presets, groups, call counts, and every validation error.

use fd_sched::{KeySteps, Plan};

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
    use fd_sched::Method;
    let p = Plan::parse("deepcache:3", 10).unwrap();
    assert_eq!((p.method, p.label()), (Method::DeepCacheId { id: 0 }, "deepcache:3:0".to_string()));
    let p = Plan::parse("deepcache:2:4", 10).unwrap();
    assert_eq!((p.method, p.key_steps.clone()), (Method::DeepCacheId { id: 4 }, vec![0, 2, 4, 6, 8]));
    let p = Plan::parse("deepcache-block:3:1", 10).unwrap();
    assert_eq!((p.method, p.label()), (Method::DeepCache { branch: 1 }, "deepcache-block:3:1".to_string()));
    assert!(p.is_deepcache() && !Plan::parse("50ls", 50).unwrap().is_deepcache());
    let e = Plan::parse("deepcache:2:x", 10).unwrap_err().to_string();
    assert!(e.contains("cache_branch_id"), "{e}");
}

#[test]
fn adaptive_plans_parse_with_the_official_defaults() {
    use fd_sched::Method;
    let p = Plan::parse("adaptive:0.01", 50).unwrap();
    assert_eq!(p.method, Method::Adaptive { threshold: 0.01, max_skip: 4 });
    assert_eq!(p.label(), "adaptive:0.01:4");
    assert!(!p.is_baseline(), "every step may run, but it is not the plain sampler");
    assert_eq!(Plan::parse("adaptive:0.05:6", 50).unwrap().label(), "adaptive:0.05:6");
    for bad in ["adaptive:x", "adaptive:0", "adaptive:-1", "adaptive:0.01:0", "adaptive:nan"] {
        assert!(Plan::parse(bad, 50).is_err(), "{bad}");
    }
    assert!(Plan::parse("adaptive:0.01+forecast:1", 50).is_err(), "forecast is for encoder propagation");
}

#[test]
fn teacache_and_fbcache_plans_parse() {
    use fd_sched::{CacheRule, Method};
    let p = Plan::parse("teacache:0.1", 50).unwrap();
    assert_eq!(p.method, Method::StepCache { rule: CacheRule::TeaCache, threshold: 0.1, residual: false });
    assert_eq!(p.label(), "teacache:0.1");
    assert!(p.is_dynamic() && !p.is_baseline());
    let p = Plan::parse("fbcache:0.05:residual", 50).unwrap();
    assert_eq!(p.method, Method::StepCache { rule: CacheRule::FbCache, threshold: 0.05, residual: true });
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
fn tgate_plans_parse_with_the_official_defaults() {
    use fd_sched::Method;
    let p = Plan::parse("tgate:10", 25).unwrap();
    assert_eq!(p.method, Method::TGate { gate_step: 10, sp_interval: 5, fi_interval: 1, warm_up: 2 });
    assert_eq!(p.label(), "tgate:10:5:1:2");
    assert!(!p.is_baseline() && !p.is_dynamic());
    assert_eq!(Plan::parse("tgate:1:1:1:0", 4).unwrap().label(), "tgate:1:1:1:0");
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
    assert_eq!((p.partial, p.forecast, p.label()), (Some(1), 0, "50ls+partial:1".to_string()));
    assert_eq!(p.key_steps, Plan::parse("50ls", 50).unwrap().key_steps, "the key steps are the plan's");
    for (bad, want) in [
        ("50ls+partial:x", "cache_branch_id"),
        ("deepcache:2+partial:1", "encoder-propagation plans only"),
        ("50ls+forecast:1+partial:1", "forecast order"),
        ("50ls+partial:1+forecast:1", "not with +partial"),
    ] {
        let e = Plan::parse(bad, 50).unwrap_err().to_string();
        assert!(e.contains(want), "{bad}: {e}");
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
