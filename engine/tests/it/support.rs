//! Helpers shared by the integration tests.

use engine::{Config, Engine, NewSignature, PetitionSpec};

/// The seed for a randomized test: `ENGINE_TEST_SEED` if set (to replay a failure), else fresh.
/// Printed either way.
pub fn seed(test: &str) -> u64 {
    let seed = match std::env::var("ENGINE_TEST_SEED") {
        Ok(text) => text.parse().expect("ENGINE_TEST_SEED must be a u64"),
        Err(_) => rand::random(),
    };
    eprintln!("{test}: seed {seed} (replay with ENGINE_TEST_SEED={seed})");
    seed
}

/// Opens a persistent engine and waits for it to be ready.
pub fn open(config: Config) -> Engine {
    let engine = Engine::open(config).expect("engine opens");
    engine.wait_ready().expect("engine recovers");
    engine
}

pub fn register(engine: &Engine, ids: &[&str]) {
    for id in ids {
        engine.register(PetitionSpec::new(*id)).expect("registers");
    }
}

pub fn sig(petition: &str, email: &str) -> NewSignature {
    NewSignature::new(petition, email)
}
