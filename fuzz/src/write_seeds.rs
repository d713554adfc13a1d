//! Writes the seed inputs of every target into `corpus/<target>/seed-NN`
//! (`cargo run --example write-seeds` from `fuzz/`). Files already there are overwritten;
//! corpus entries the fuzzer added are kept.

use std::fs;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let codec = arc_gateway::proxy::http1::fuzzing::seeds();
    let sets: [(&str, Vec<Vec<u8>>); 7] = [
        ("request", codec.clone()),
        ("chunked", codec.clone()),
        ("response", codec),
        ("conn", arc_gateway::proxy::core::fuzzing::seeds()),
        ("config", arc_gateway::config::fuzzing::seeds()),
        (
            "annotations",
            arc_gateway::controller::translate::fuzzing::seeds(),
        ),
        ("routing", arc_gateway::routing::fuzzing::seeds()),
    ];
    for (target, seeds) in &sets {
        let dir = Path::new("corpus").join(target);
        fs::create_dir_all(&dir)?;
        for (i, seed) in seeds.iter().enumerate() {
            fs::write(dir.join(format!("seed-{i:02}")), seed)?;
        }
        println!("{target}: {} seeds", seeds.len());
    }
    Ok(())
}
