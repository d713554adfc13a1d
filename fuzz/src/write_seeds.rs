//! Writes the codec's seed inputs into `corpus/<target>/` for the fuzz targets
//! (`cargo run --example write-seeds` from `fuzz/`).

use std::fs;
use std::path::Path;

fn main() -> std::io::Result<()> {
    let seeds = arc_gateway::proxy::http1::fuzzing::seeds();
    for target in ["request", "chunked", "response"] {
        let dir = Path::new("corpus").join(target);
        fs::create_dir_all(&dir)?;
        for (i, seed) in seeds.iter().enumerate() {
            fs::write(dir.join(format!("seed-{i:02}")), seed)?;
        }
    }
    println!("wrote {} seeds per target", seeds.len());
    Ok(())
}
