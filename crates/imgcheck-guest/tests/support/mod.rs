//! Helpers shared by the guest crate's integration tests.

use std::process::Command;

/// Runs `tool` (from `package`, with /usr/sbin on the PATH) with `args`; a
/// missing tool or a failure fails the test, naming the package.
pub fn run_tool(package: &str, tool: &str, args: &[&str]) {
    let out = Command::new(tool)
        .args(args)
        .env(
            "PATH",
            format!(
                "{}:/usr/sbin:/sbin",
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .output()
        .unwrap_or_else(|e| panic!("{package} is required for this test: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
