//! Every API action's request JSON, in-process: each input is a short
//! sequence of calls (see `palisade_fuzz` for the format) run against a
//! fresh in-memory store holding one resource of every kind. Checks what
//! DESIGN.md section 6 promises: no panic; every error is a well-formed
//! Tencent code and never `InternalError` (a request cannot be "internally"
//! wrong); a failed call leaves the store revision unchanged (nothing half
//! applied); every success serialises.

use crate::world::{calls, service_of, well_formed_code, World};

/// Checks one input.
pub fn check(data: &[u8]) {
    let calls = calls(data);
    if calls.is_empty() {
        return;
    }
    let world = World::new();
    for (action, body) in calls {
        // Unknown actions go to the `vpc` service (InvalidAction).
        let service = service_of(&action).unwrap_or("vpc");
        let body = world.substitute(body);
        let before = world.revision();
        match world.call(service, &action, &body) {
            Ok(reply) => {
                serde_json::to_string(&reply).expect("a reply serialises");
            }
            Err(e) => {
                assert!(
                    well_formed_code(e.code.as_str()),
                    "{action}: code {:?}",
                    e.code
                );
                assert_ne!(
                    e.code,
                    "InternalError",
                    "{action} {}: {}",
                    String::from_utf8_lossy(&body),
                    e.message
                );
                assert!(!e.message.is_empty(), "{action}: empty message");
                assert_eq!(
                    world.revision(),
                    before,
                    "{action} failed with {} but changed the store",
                    e.code
                );
            }
        }
    }
}
