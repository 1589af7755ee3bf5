//! Fuzzes the protocol parser: any input either parses into a request whose
//! identifiers are safe to store, or is refused with a message. Never a
//! panic. Run: `cargo fuzz run parse_request -- -max_total_time=60`.
#![no_main]

use calico_mesos::protocol::{parse_request, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match parse_request(data) {
        Ok(Request::Allocate(a)) => assert!(!a.uid.contains('/')),
        Ok(Request::Isolate(i)) => assert!(i.pid > 0 && !i.container_id.contains('/')),
        Ok(_) => {}
        Err(msg) => assert!(!msg.is_empty()),
    }
});
