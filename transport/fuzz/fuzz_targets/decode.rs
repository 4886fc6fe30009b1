//! Feeds arbitrary bytes to the wire decoder, as a hostile peer would.
//!
//! Besides "never panics", it checks what the stream reader relies on: `frame_len` agrees
//! with what `decode` consumes, a decode always makes progress, and whatever decodes
//! re-encodes to a frame that decodes to the same envelope; the borrowing decoder the reader
//! uses agrees with the owned one on every input.

#![no_main]

use flotilla_transport::core::wire::{self, DEFAULT_MAX_BODY, HEADER_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = wire::frame_len(data, DEFAULT_MAX_BODY);
    let mut rest = data;
    loop {
        let owned = wire::decode(rest, DEFAULT_MAX_BODY);
        let borrowed = wire::decode_borrowed(rest, DEFAULT_MAX_BODY).map(|f| f.map(|(b, used)| (b.into_owned(), used)));
        assert_eq!(borrowed, owned);
        let Ok(Some((envelope, used))) = owned else { break };
        assert!((HEADER_LEN..=rest.len()).contains(&used), "consumed {used} of {}", rest.len());
        assert_eq!(wire::frame_len(rest, DEFAULT_MAX_BODY), Ok(Some(used)));
        let mut again = Vec::new();
        wire::encode(&envelope, &mut again).expect("a decoded envelope encodes");
        assert_eq!(wire::decode_datagram(&again, DEFAULT_MAX_BODY), Ok(envelope));
        rest = rest.get(used..).unwrap_or_default();
    }
    let _ = wire::decode_datagram(data, DEFAULT_MAX_BODY);
});
