//! Access-rule files on arbitrary text: the parser never panics, every error names a line of
//! the file, and for any client and topic the rights obey the file's promises (a denial wins
//! over every grant, a topic readable is one a granted subscription could deliver).
#![no_main]

use libfuzzer_sys::fuzz_target;
use serial2mqtt::broker::acl::{valid_filter, Acl};
use serial2mqtt::message::topic_matches as matches;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The last line is a probe: user, client id and topic, tab-separated.
    let (file, probe) = text.rsplit_once('\n').unwrap_or((text, ""));
    let mut parts = probe.split('\t');
    let user = parts.next().filter(|u| !u.is_empty());
    let client = parts.next().unwrap_or("c");
    let topic = parts.next().unwrap_or("a/b");
    let acl = match Acl::parse(file, "gw", &["dev".to_owned(), "d+".to_owned()]) {
        Ok(acl) => acl,
        Err(errors) => {
            let lines = file.lines().count();
            for e in errors {
                assert!(e.line >= 1 && e.line <= lines, "{e:?} in {lines} lines");
                assert!(!e.hint.is_empty());
            }
            return;
        }
    };
    let rights = acl.rights(user, client);
    if topic.contains(['+', '#']) || topic.is_empty() {
        return;
    }
    // A topic is its own filter: readable means subscribing to it exactly may be granted.
    if rights.may_read(topic) {
        assert!(rights.may_subscribe(topic), "{topic} readable but not subscribable");
    }
    if rights.may_write(topic) {
        assert!(rights.may_write_into(topic), "{topic}");
    }
    let _ = valid_filter(topic) && matches(topic, topic);
});
