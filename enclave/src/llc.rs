//! The share of the last-level cache that tract blocks its large matrix
//! products against.
//!
//! tract-linalg walks the tiles of a product whose streamed operand
//! overflows the core's L2 in blocks, and adds an outer tier of blocks sized
//! against the last-level cache when the product's operands overflow that
//! too. It takes the size of that cache from the L3 the kernel reports. In a
//! virtual machine or an enclave that is the whole L3 of the chip's core
//! complex (an AMD EPYC of the Zen 3 generation: 32 MiB, shared by eight
//! cores), though the other cores, other tenants' or the parent's, fill it
//! too. tract then counts 32 MiB for two vCPUs, finds that ResNet18's layer4
//! products (9.4 MB of weights) fit, adds no outer tier, and its inner walk
//! reads all the weights again for every panel of patches (docs/TRACT.md,
//! "Ready for upstream" item 6).
//!
//! The model server therefore tells tract to count on at most
//! [`BYTES_PER_CPU`] per CPU it may run on: the most L3 per core among the
//! server chips Nitro instances run on (AMD EPYC Zen 3 and Zen 4: 32 MiB per
//! eight cores; Intel Sapphire Rapids: 1.875 MiB per core). It is tract's own
//! setting, `TRACT_LLC_BYTES`, given as a configuration value, so an
//! operator's `TRACT_LLC_BYTES` in the environment still wins. The walk is a
//! permutation of independent tiles: every answer is the same to the bit.
//! Measured with `bench engine` (BENCHMARKS.md, "Engine levers").

use tract_onnx::tract_core::knobs;
use tract_onnx::tract_core::tract_linalg::cache::cache_info;

/// The last-level cache counted per CPU, at most.
pub const BYTES_PER_CPU: usize = 4 << 20;

/// The knob of tract-linalg this sets.
pub const KNOB: &str = "TRACT_LLC_BYTES";

/// The cache tract should count on with an `l3`-byte last-level cache and
/// `cpus` CPUs: `cpus` x [`BYTES_PER_CPU`] when the L3 is larger, else
/// nothing to correct (`None`, also when the L3 is unknown).
pub fn share(l3: usize, cpus: usize) -> Option<usize> {
    let share = BYTES_PER_CPU.saturating_mul(cpus.max(1));
    (l3 > share).then_some(share)
}

fn here() -> (usize, usize) {
    (cache_info().l3, std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Gives tract this machine's [`share`] of its last-level cache. Called
/// before any product runs (tract reads the setting once, at the first
/// product); calling it again is harmless.
pub fn apply() -> Result<(), String> {
    let (l3, cpus) = here();
    match share(l3, cpus) {
        Some(bytes) => knobs::set_config_global(KNOB, &bytes.to_string()).map_err(|e| format!("{KNOB}: {e:#}")),
        None => Ok(()),
    }
}

/// What [`apply`] gives tract on this machine, for the start-up log.
pub fn describe() -> String {
    let (l3, cpus) = here();
    let mib = |b: usize| b >> 20;
    let what = match share(l3, cpus) {
        Some(bytes) => format!("{} MiB of the {} MiB L3 ({cpus} CPUs)", mib(bytes), mib(l3)),
        None if l3 == 0 => format!("as tract detects it (no L3 found, {cpus} CPUs)"),
        None => format!("the {} MiB L3 as tract detects it ({cpus} CPUs)", mib(l3)),
    };
    let env = if std::env::var_os(KNOB).is_some() { format!(", overridden by {KNOB} in the environment") } else { String::new() };
    format!("last-level cache counted by tract's blocking: {what}{env}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_l3_larger_than_the_cpus_share_is_cut_to_it() {
        // a 2-vCPU slice of an EPYC core complex
        assert_eq!(share(32 << 20, 2), Some(8 << 20));
        assert_eq!(share(32 << 20, 1), Some(4 << 20));
        // a CPU count of 0 counts as one CPU
        assert_eq!(share(32 << 20, 0), Some(4 << 20));
    }

    #[test]
    fn an_l3_within_the_share_or_unknown_is_left_to_tract() {
        assert_eq!(share(32 << 20, 8), None);
        assert_eq!(share(8 << 20, 2), None);
        assert_eq!(share(0, 2), None);
    }

    #[test]
    fn applying_twice_is_allowed_and_reaches_tract() {
        apply().unwrap();
        apply().unwrap();
        let (l3, cpus) = here();
        if let (Some(bytes), None) = (share(l3, cpus), std::env::var_os(KNOB)) {
            let knob = knobs::all().into_iter().find(|k| k.name == KNOB).unwrap();
            assert_eq!((knob.current)(), bytes.to_string());
        }
    }
}
