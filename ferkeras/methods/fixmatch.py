"""FixMatch on the rows judged noisy (Sohn et al., "FixMatch: Simplifying Semi-Supervised
Learning with Consistency and Confidence", NeurIPS 2020), with FlexMatch-style per-class
thresholds (Zhang et al., NeurIPS 2021; cycle.threshold_mode adaptive) and distribution
alignment: their labels are dropped, and a confident prediction on a weak view is the target
of the strong view. The default method; the base the others extend.

The trainer is `CycleTrainer` (`ferkeras.trainers.cycle`), its pseudo-label functions
`ferkeras.trainers.pseudo_labels`. Its options are the shared cycle keys (cycle.threshold,
cycle.threshold_mode, cycle.min_threshold, cycle.lambda_u, cycle.distribution_alignment),
which the other methods read too; it has no section of its own.
"""
