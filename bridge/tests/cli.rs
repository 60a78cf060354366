//! The command line itself. (The bridge's behaviour is tested from outside in tests/, against
//! this same binary: having an integration test here makes `cargo test --workspace` build the
//! plain `rlclaw` executable with the workspace's features, so those tests reuse it instead of
//! building a second copy with different features.)

use std::process::Command;

fn rlclaw(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rlclaw"))
        .args(args)
        .output()
        .expect("the rlclaw binary runs")
}

#[test]
fn help_lists_the_commands_a_person_needs() {
    let out = rlclaw(&["--help"]);
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for command in [
        "serve", "status", "good", "bad", "undo", "history", "export", "train", "adapters",
        "rollback", "init", "doctor", "emit",
    ] {
        assert!(
            help.lines().any(|l| l.trim_start().starts_with(command)),
            "`rlclaw --help` does not list `{command}`:\n{help}"
        );
    }
}

#[test]
fn an_unknown_command_is_a_clear_error() {
    let out = rlclaw(&["frobnicate"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unrecognized subcommand"), "{err}");
}
