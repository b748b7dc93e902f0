//! `aistack`: the aistack command-line tool and server. Everything lives in the library.

fn main() -> std::process::ExitCode {
    aistack_server::cli::main()
}
