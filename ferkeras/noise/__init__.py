"""Label noise, Keras-free where it can be: finding noisy rows and modelling the noise.

    selection.py     per-sample loss normalisation, GMM / small-loss / H2E selectors, the split
    h2e.py           H2E's noise identifier (Yi et al., ECCV 2022), the `h2e` selector
    label_issues.py  cleanlab-style label issues from out-of-sample probabilities
    transition.py    noise transition matrices: estimate, apply, score
    correction.py    forward loss correction and relabelling cores
    soft_targets.py  ELR and self-distillation targets (composable with any supervised loss)
    trusted.py       trusted (clean-label) rows: carve, select, decision rules
"""
