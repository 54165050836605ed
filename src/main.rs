//! `wsgate`: parse the command line, dispatch, map errors to exit codes
//! (0 success, 1 bad config or rejected input, 2 usage error).

use std::process::ExitCode;

use wsgate::cli;

fn main() -> ExitCode {
    wsgate::log::init_from_env();
    let command = match cli::parse_args(std::env::args_os()) {
        Ok(c) => c,
        Err(e) => {
            // --help and --version print to stdout and succeed; real usage errors exit 2.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match cli::run::run(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(cli::run::Failure { message, code }) => {
            if !message.is_empty() {
                eprintln!("wsgate: {message}");
            }
            ExitCode::from(code)
        }
    }
}
