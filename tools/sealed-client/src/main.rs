//! `sealed-client`: see `sealed-client --help` and the library's `cli` module.

use std::process::ExitCode;

fn main() -> ExitCode {
    let args = std::env::args().skip(1).collect();
    let status = sealed_client::cli::main(args, &mut std::io::stdout().lock(), &mut std::io::stderr().lock());
    ExitCode::from(status)
}
