//! The `imager` binary: everything is in [`imager::cli`].

fn main() -> std::process::ExitCode {
    imager::cli::main()
}
