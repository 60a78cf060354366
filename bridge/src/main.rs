use std::process::ExitCode;

fn main() -> ExitCode {
    rlclaw::cli::main()
}
