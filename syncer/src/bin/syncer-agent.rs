//! `syncer-agent`: the agent executable `--install-agent` copies to hosts. All of it is
//! the `syncer-agent` crate (no store, image builder, clap or progress bars); it lives
//! in this package so that building or installing the syncer builds it beside `syncer`,
//! where the controller finds it.

fn main() -> std::process::ExitCode {
    syncer_agent::command::main()
}
