"""A diffusion model of normal tissue (after GEMDiff, Ai et al. 2025): config, count space,
denoiser, schedule, training, bridge to the closest normal, calibration, and the perturb and
augment computations. docs/diffusion.md describes it."""
