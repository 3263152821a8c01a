//! `dlogp probe`: the devices this build runs on and whether their logits
//! are batch-invariant, which decides what speculative decoding promises.

use clap::Args;
use serde::Serialize;

use super::args::{ModelArgs, PairArgs};
use crate::runtime::{
    batch_invariance, devices, model_batch_invariance, BatchInvariance, Device, Model, ModelPair,
    ProbeOptions,
};

#[derive(Debug, Args)]
pub struct ProbeArgs {
    #[command(flatten)]
    pub pair: PairArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Serialize)]
struct Report<'a> {
    devices: &'a [Device],
    gpu_layers: u32,
    flash_attn: bool,
    batch_invariance: &'a BatchInvariance,
    speculative: &'static str,
}

/// One JSON object on stdout: `devices`, `gpu_layers`, `batch_invariance`
/// (`invariant`, `max_abs_diff`, …) and `speculative` (`exact` or
/// `same-distribution`).
pub fn run(args: ProbeArgs) -> anyhow::Result<()> {
    let threads = args.model.threads()?;
    let load = args.model.load_options();
    let options = ProbeOptions {
        threads,
        flash_attention: args.model.flash_attn.enabled(),
    };
    let result = match args.pair.spec() {
        Some(spec) => batch_invariance(&ModelPair::load(&spec, &load)?, &options)?,
        None => model_batch_invariance(&Model::load(args.pair.base(), &load)?, &options)?,
    };
    let devices = devices()?;
    let report = Report {
        devices: &devices,
        gpu_layers: args.model.gpu_layers,
        flash_attn: args.model.flash_attn.enabled(),
        batch_invariance: &result,
        speculative: if result.invariant {
            "exact"
        } else {
            "same-distribution"
        },
    };
    println!("{}", serde_json::to_string(&report)?);
    tracing::info!(
        "speculative decoding here: {}",
        result.speculative_promise()
    );
    Ok(())
}

/// Before a speculative run (`draft` > 1) on `pair`: say what speculative
/// decoding promises here. A CPU build without flash attention is
/// batch-invariant by construction (the suite tests it) and is not probed;
/// with a GPU device present, or flash attention on, the probe decides, and
/// a batch-dependent backend gets a warning (tokens reproducible with
/// `--draft 1`).
pub fn report_speculative(
    pair: &ModelPair,
    draft: usize,
    threads: usize,
    flash_attention: bool,
) -> anyhow::Result<()> {
    if draft <= 1 {
        return Ok(());
    }
    if !flash_attention && !crate::runtime::has_offload_device()? {
        tracing::debug!(
            "CPU backend without flash attention: batch-invariant, speculative decoding is exact"
        );
        return Ok(());
    }
    let result = batch_invariance(
        pair,
        &ProbeOptions {
            threads,
            flash_attention,
        },
    )?;
    if result.invariant {
        tracing::info!(
            "batch-invariant backend ({} positions, batches of {:?}): speculative decoding is exact",
            result.n_tokens,
            result.batch_sizes
        );
    } else {
        tracing::warn!(
            "this backend's logits depend on the batch (max |Δ| {:.3e} in the logits over {} positions): speculative decoding gives the same distribution, not the tokens of lockstep decoding\nhint: --draft 1 decodes lockstep, reproducible token for token",
            result.max_abs_diff,
            result.n_tokens
        );
    }
    Ok(())
}
