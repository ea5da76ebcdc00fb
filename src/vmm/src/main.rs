//! `berth-vmm`: run one microVM. See `berth-vmm --help` and [`berth_vmm::cli`].

fn main() -> std::process::ExitCode {
    berth_vmm::cli::main(std::env::args().skip(1).collect(), None)
}
