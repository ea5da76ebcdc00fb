//! berth's guest agent, PID 1 inside each microVM. See docs/design.md; the agent is tracked
//! by the "Guest agent and container runtime" issue and not built yet.
