use std::convert::Infallible;

use super::*;

fn event(n: u64) -> AuditEvent {
    AuditEvent {
        time_ms: 1_700_000_000_000 + n,
        caller: "spiffe://example.com/api".into(),
        operation: "store".into(),
        user_id: format!("user{n}"),
        outcome: "Ok".into(),
        request_id: format!("req-{n}"),
        ..Default::default()
    }
}

/// A chain of `count` events as stored (key, value) pairs.
fn chain(count: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut head = ChainHead::default();
    let mut stored = Vec::new();
    for n in 1..=count {
        let (chained, value) = head.append(&event(n));
        stored.push((key(chained.seq).to_vec(), value));
        head = ChainHead::after(&chained);
    }
    stored
}

fn check(anchor: ChainHead, stored: &[(Vec<u8>, Vec<u8>)]) -> Verification {
    verify(anchor, stored.iter().cloned().map(Ok::<_, Infallible>)).unwrap()
}

#[test]
fn an_untouched_chain_verifies_and_decodes() {
    let stored = chain(10);
    let report = check(ChainHead::default(), &stored);
    assert_eq!((report.checked, report.broken), (10, None));
    assert_eq!(report.head.seq, 10);
    let (key, value) = &stored[3];
    assert_eq!(decode(key, value).unwrap().event, event(4));
}

#[test]
fn editing_any_byte_of_any_event_is_reported_at_that_event() {
    let stored = chain(6);
    for index in 0..stored.len() {
        for byte in 0..stored[index].1.len() {
            let mut edited = stored.clone();
            edited[index].1[byte] ^= 0x01;
            let report = check(ChainHead::default(), &edited);
            let (seq, _) = report.broken.expect("an edit is detected");
            // An edit of the stored "previous digest" shows at the event
            // itself too, as a broken link.
            assert_eq!(seq, index as u64 + 1, "event {index}, byte {byte}");
        }
    }
}

#[test]
fn removing_or_swapping_events_is_reported_where_it_happened() {
    let stored = chain(6);

    let mut removed = stored.clone();
    removed.remove(2);
    let (seq, reason) = check(ChainHead::default(), &removed).broken.unwrap();
    assert_eq!(seq, 3);
    assert!(reason.contains("missing"), "{reason}");

    // Swapping the contents of events 3 and 4 under their keys.
    let mut swapped = stored.clone();
    let (three, four) = (swapped[2].1.clone(), swapped[3].1.clone());
    swapped[2].1 = four;
    swapped[3].1 = three;
    let (seq, reason) = check(ChainHead::default(), &swapped).broken.unwrap();
    assert_eq!(seq, 3);
    assert!(reason.contains("does not follow"), "{reason}");
}

#[test]
fn a_pruned_chain_verifies_from_its_anchor_once_the_prune_is_recorded() {
    let mut stored = chain(10);
    let anchor = ChainHead::after(&decode(&stored[3].0, &stored[3].1).unwrap());

    // Removing events 1 to 4 and writing an anchor is not enough...
    let report = check(anchor, &stored[4..]);
    let (seq, reason) = report.broken.unwrap();
    assert_eq!(seq, 5);
    assert!(reason.contains("no audit.prune event"), "{reason}");

    // ...the chain must also hold the event that recorded the prune.
    let last = decode(&stored[9].0, &stored[9].1).unwrap();
    let prune = AuditEvent {
        operation: "audit.prune".into(),
        detail: prune_detail(&anchor),
        ..event(11)
    };
    let (chained, value) = ChainHead::after(&last).append(&prune);
    stored.push((key(chained.seq).to_vec(), value));
    let report = check(anchor, &stored[4..]);
    assert_eq!(
        (report.checked, report.broken, report.pruned_through),
        (7, None, 4)
    );

    // Without the anchor, the first kept event does not link.
    assert!(check(ChainHead::default(), &stored[4..]).broken.is_some());
}
