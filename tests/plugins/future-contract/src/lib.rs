//! Built against `ferry:plugin@0.2.0`; Ferry 0.1 must refuse it by name.

wit_bindgen::generate!({ path: "wit", world: "election-policy" });

use exports::ferry::plugin::election::{ElectionRequest, Guest};

/// The plugin.
pub struct Future;

impl Guest for Future {
    fn elect(request: ElectionRequest) -> Result<String, String> {
        request
            .volunteers
            .first()
            .map(|c| c.id.clone())
            .ok_or_else(|| "no volunteers".into())
    }
}

// Only in the component: a native cdylib's linker rejects the export names.
#[cfg(target_family = "wasm")]
export!(Future);
