//! Nitro Enclave Image Files (EIF), written and read by our own code.
//!
//! An EIF is what `nitro-cli run-enclave` boots: a Linux kernel, its command line, and cpio
//! ramdisks holding AWS's init and our image's file system. nitro-cli builds one from a docker
//! image (docker, linuxkit, its own EIF writer). This crate writes the same file from the
//! pieces directly, so `make eif` needs no Docker daemon, and every byte of the result is a
//! function of its inputs: two builds from the same sources give the same file and the same
//! PCRs, which is what lets anyone check the measurements an enclave attests.
//!
//! - `crc32`: the CRC-32/ISO-HDLC the header carries (our own table);
//! - `cpio`: deterministic uncompressed newc archives (the ramdisks);
//! - `ramdisk`: the two ramdisks in nitro-cli's layout (boot: init + nsm.ko; app: rootfs, cmd, env);
//! - `format`: the container itself, writer and checking reader (`Eif::read`), drawn there;
//! - `measure`: PCR0/1/2 exactly as nitro-cli and the hypervisor compute them;
//! - `metadata`: the unmeasured JSON metadata section, with fixed values.
//!
//! What it refuses to do: sign (no PCR8), build aarch64 images, read EIFs whose sections are
//! not back to back in nitro-cli's order, or accept any limit in `format` being exceeded. It is
//! a build tool: it never runs inside the enclave.
//!
//! Sources the facts were checked against (read, not copied): aws-nitro-enclaves-image-format
//! (`src/defs/mod.rs`, `src/defs/eif_hasher.rs`, `src/utils/mod.rs`), QEMU `hw/core/eif.c`,
//! aws-nitro-enclaves-sdk-bootstrap `init/init.c`, aws-nitro-enclaves-cli
//! `enclave_build/src/{lib.rs,docker.rs,yaml_generator.rs}`.

#![forbid(unsafe_code)]

pub mod cpio;
pub mod crc32;
pub mod format;
pub mod measure;
pub mod metadata;
pub mod ramdisk;

pub use cpio::{Archive, CpioError};
pub use format::{Eif, EifError, EifWriter, SectionInfo, SectionKind};
pub use measure::Measurements;
pub use metadata::Metadata;
