//! The whole selftest as a cargo test: every check of every selftest guest
//! must pass.

use hindsight_testsuite::selftest;

#[test]
fn selftest_passes() {
    let mut lines = Vec::new();
    let (passed, failed) = selftest::run_all(&mut |l| {
        println!("{l}");
        lines.push(l.to_string());
    });
    println!("selftest: {passed} passed, {failed} failed");
    let failures: Vec<&String> = lines.iter().filter(|l| l.starts_with("FAIL")).collect();
    assert_eq!(
        failed,
        0,
        "selftest failures:\n{}",
        failures
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(passed >= 40, "only {passed} checks passed");
}
