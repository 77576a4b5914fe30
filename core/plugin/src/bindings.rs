//! Host bindings generated from `sdk/wit`, the single source of the
//! contract. The shared interfaces are generated once and reused by each
//! world. Exports are called asynchronously, so a call waiting inside the
//! host (WASI files and sockets) can be abandoned at its deadline; Ferry's
//! own imports are quick or bound their own waits, and stay synchronous.
#![allow(missing_docs)]

wasmtime::component::bindgen!({
    path: "../../sdk/wit",
    world: "imports",
});

/// The transport policy world.
pub mod transport {
    wasmtime::component::bindgen!({
        path: "../../sdk/wit",
        world: "transport-policy",
        with: {
            "ferry:plugin/types": crate::bindings::ferry::plugin::types,
            "ferry:plugin/host": crate::bindings::ferry::plugin::host,
        },
        exports: { default: async },
    });
}

/// The sync schedule world.
pub mod schedule {
    wasmtime::component::bindgen!({
        path: "../../sdk/wit",
        world: "sync-schedule",
        with: {
            "ferry:plugin/types": crate::bindings::ferry::plugin::types,
            "ferry:plugin/host": crate::bindings::ferry::plugin::host,
        },
        exports: { default: async },
    });
}

/// The election policy world.
pub mod election {
    wasmtime::component::bindgen!({
        path: "../../sdk/wit",
        world: "election-policy",
        with: {
            "ferry:plugin/types": crate::bindings::ferry::plugin::types,
            "ferry:plugin/host": crate::bindings::ferry::plugin::host,
        },
        exports: { default: async },
    });
}

/// The installer world.
pub mod installer {
    wasmtime::component::bindgen!({
        path: "../../sdk/wit",
        world: "installer",
        with: {
            "ferry:plugin/types": crate::bindings::ferry::plugin::types,
            "ferry:plugin/host": crate::bindings::ferry::plugin::host,
            "ferry:plugin/installer-host": crate::bindings::ferry::plugin::installer_host,
        },
        exports: { default: async },
    });
}
