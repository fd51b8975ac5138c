//! The strangler toolkit: migration proxy, control plane, shadow diffing, sync relay and CLI (not built yet).
