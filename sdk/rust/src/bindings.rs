//! Bindings generated from `sdk/wit`, one module per world. The shared
//! interfaces (`types`, `host`) are generated once, here, and reused by each
//! world so a plugin sees one set of types.
#![allow(missing_docs)]

wit_bindgen::generate!({
    path: "../wit",
    world: "imports",
});

pub mod transport {
    wit_bindgen::generate!({
        path: "../wit",
        world: "transport-policy",
        with: {
            "ferry:plugin/types@0.1.0": crate::bindings::ferry::plugin::types,
            "ferry:plugin/host@0.1.0": crate::bindings::ferry::plugin::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_transport_world",
    });
}

pub mod schedule {
    wit_bindgen::generate!({
        path: "../wit",
        world: "sync-schedule",
        with: {
            "ferry:plugin/types@0.1.0": crate::bindings::ferry::plugin::types,
            "ferry:plugin/host@0.1.0": crate::bindings::ferry::plugin::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_schedule_world",
    });
}

pub mod election {
    wit_bindgen::generate!({
        path: "../wit",
        world: "election-policy",
        with: {
            "ferry:plugin/types@0.1.0": crate::bindings::ferry::plugin::types,
            "ferry:plugin/host@0.1.0": crate::bindings::ferry::plugin::host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_election_world",
    });
}

pub mod installer {
    wit_bindgen::generate!({
        path: "../wit",
        world: "installer",
        with: {
            "ferry:plugin/types@0.1.0": crate::bindings::ferry::plugin::types,
            "ferry:plugin/host@0.1.0": crate::bindings::ferry::plugin::host,
            "ferry:plugin/installer-host@0.1.0": crate::bindings::ferry::plugin::installer_host,
        },
        pub_export_macro: true,
        export_macro_name: "__export_installer_world",
    });
}
