//! The `imager` command: a thin command line over the `imager` library; everything is
//! in [`cli`].

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
