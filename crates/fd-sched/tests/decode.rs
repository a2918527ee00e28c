//! `auto` decoding: the choice from measured per-row costs, and the mode names.

use fd_sched::decode::{choose, max_steps_per_call, DecodeMode, RowCost};
use fd_sched::Plan;

fn costs(ms: &[f64]) -> Vec<RowCost> {
    [1, 2, 4, 8].iter().zip(ms).map(|(&k, &m)| RowCost { steps: k, rows: 32 * k, ms_per_row: m }).collect()
}

#[test]
fn choose_takes_the_cheapest_per_row_and_ties_go_to_smaller_calls() {
    // batching does not pay: sequential
    let c = choose(&costs(&[4.0, 4.1]), 32, 15);
    assert!(!c.parallel && c.max_decoder_batch == 0, "{c:?}");
    assert_eq!(c.requested, DecodeMode::Auto);
    assert_eq!(c.calibration.len(), 2);
    // 3% cheaper is within the noise margin: still sequential
    let c = choose(&costs(&[4.0, 3.88]), 32, 15);
    assert!(!c.parallel, "{c:?}");
    // 8% cheaper as calibrated is not believed either (such a call measured 32% slower in the
    // sampling loop, decode.rs MIN_GAIN): sequential
    let c = choose(&costs(&[3.55, 3.26, 3.96]), 32, 15);
    assert!(!c.parallel, "{c:?}");
    // two steps per call 20% cheaper, four worse: parallel capped at 2 x 32 rows
    let c = choose(&costs(&[4.0, 3.2, 3.6]), 32, 15);
    assert!(c.parallel && c.max_decoder_batch == 64, "{c:?}");
    assert!(c.reason.contains("2 steps per call"), "{}", c.reason);
    // the best measured size does not fit the plan's longest group (3 steps): the best that fits
    let c = choose(&costs(&[4.0, 3.2, 2.0]), 32, 3);
    assert_eq!(c.max_decoder_batch, 64, "{c:?}");
    // a plan whose groups have one step each decodes one step per call
    let c = choose(&costs(&[4.0, 1.0]), 32, 1);
    assert!(!c.parallel, "{c:?}");
    assert_eq!(c.summary(), "auto: sequential");
    // steadily cheaper: the largest
    let c = choose(&costs(&[4.0, 3.0, 2.0, 1.0]), 32, 50);
    assert_eq!((c.parallel, c.max_decoder_batch, c.summary().as_str()), (true, 256, "auto: parallel ≤256 rows"));
}

#[test]
fn mode_names_and_longest_group() {
    for (s, m) in
        [("auto", DecodeMode::Auto), ("parallel", DecodeMode::Parallel), ("sequential", DecodeMode::Sequential)]
    {
        assert_eq!(s.parse::<DecodeMode>().unwrap(), m);
        assert_eq!(m.to_string(), s);
        assert_eq!(serde_json::to_value(m).unwrap(), serde_json::json!(s));
    }
    assert!("seq".parse::<DecodeMode>().unwrap_err().to_string().contains("expected auto, parallel or sequential"));
    assert_eq!(DecodeMode::default(), DecodeMode::Auto);
    assert_eq!(max_steps_per_call(&Plan::parse("50ls", 50).unwrap()), 15);
    assert_eq!(max_steps_per_call(&Plan::parse("none", 50).unwrap()), 1);
    assert_eq!(max_steps_per_call(&Plan::parse("deepcache:3", 50).unwrap()), 1);
}
