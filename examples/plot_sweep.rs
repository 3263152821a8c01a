//! Redraws the plot of a finished `dlogp intervene` sweep from its JSON
//! (`--json`), without decoding anything:
//!
//! ```sh
//! cargo run --release --example plot_sweep -- docs/results/sweep.json docs/intervene-smollm2-lowprob.png
//! ```
//!
//! The same chart `dlogp intervene --plot` draws (`eval::Sweep::plot`).

use std::path::PathBuf;

use dlogp::eval::Sweep;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [json, out] = args.as_slice() else {
        return Err("usage: plot_sweep SWEEP.json OUT.(svg|png)".into());
    };
    let text = std::fs::read_to_string(json).map_err(|e| format!("{json}: {e}"))?;
    let sweep: Sweep = serde_json::from_str(&text).map_err(|e| format!("{json}: {e}"))?;
    sweep.plot().save(&PathBuf::from(out))?;
    Ok(())
}
