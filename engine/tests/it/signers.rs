//! The signer identity end to end: the spellings of one mailbox sign a petition once, also
//! after a restart, and the store's own check (which derives each stored signer again) agrees.

use engine::{Config, InvalidField, Outcome, SubmitError};

use crate::support::{open, register, sig};

#[test]
fn spellings_of_one_mailbox_sign_once_across_restarts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let engine = open(Config::persistent(dir.path()));
    register(&engine, &["p"]);
    let composed = "ren\u{e9}@example.org";
    let decomposed = "rene\u{301}@example.org";
    let submit = |engine: &engine::Engine, email: &str| {
        let mut outcomes = engine.submit_batch(vec![sig("p", email)]);
        assert_eq!(outcomes.len(), 1);
        outcomes.remove(0)
    };
    assert_eq!(
        submit(&engine, composed),
        Ok(Outcome::Accepted { count: 1 })
    );
    assert_eq!(
        submit(&engine, decomposed),
        Ok(Outcome::Duplicate { count: 1 })
    );
    assert_eq!(
        submit(&engine, "pu@b\u{fc}cher.de"),
        Ok(Outcome::Accepted { count: 2 })
    );
    assert_eq!(
        submit(&engine, "PU@XN--BCHER-KVA.DE"),
        Ok(Outcome::Duplicate { count: 2 })
    );
    assert_eq!(
        submit(&engine, "z\u{200b}w@example.org"),
        Err(SubmitError::Invalid(InvalidField {
            field: "email",
            reason: "contains an invisible or formatting character",
        }))
    );
    assert_eq!(engine.count("p"), Some(2));
    engine.close().expect("closes");
    drop(engine);

    let engine = open(Config::persistent(dir.path()));
    assert_eq!(
        submit(&engine, decomposed),
        Ok(Outcome::Duplicate { count: 2 })
    );
    assert_eq!(
        submit(&engine, "pu@bu\u{308}cher.de"),
        Ok(Outcome::Duplicate { count: 2 })
    );
    let report = engine.verify_store().expect("consistent");
    assert_eq!(report.signatures, 2);
    engine.close().expect("closes");
}
