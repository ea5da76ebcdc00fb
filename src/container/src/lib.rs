//! berth's container runtime library, shared by the guest agent (inside each microVM) and
//! process isolation (directly on the host). See docs/design.md; the runtime itself is
//! tracked by the "Guest agent and container runtime" issue and not built yet.
