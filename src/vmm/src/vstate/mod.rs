//! KVM state: guest memory and vCPUs.

pub mod memory;
pub mod vcpu;
