"""Meta Pseudo Labels (Pham et al., "Meta Pseudo Labels", CVPR 2021; reduced first-order
form) instead of FixMatch on the unlabelled rows: a teacher network (own weights and optimizer,
started from the warmed-up student at the first split) gives hard pseudo-labels the student
trains on, and learns from the student's labelled-loss feedback h plus its own supervised and
FixMatch losses (threshold cycle.threshold, fixed). The student is evaluated and exported.

    core.py     the feedback and the teacher's loss (`keras.ops`)
    trainer.py  `MPLTrainer`, the teacher-student step
    (here)      `MPLConfig`, the recipe section `cycle.mpl`
"""

from __future__ import annotations

import dataclasses

from ferkeras.config import field


@dataclasses.dataclass
class MPLConfig:
    """cycle.method mpl (Pham et al., CVPR 2021)."""

    teacher_lr_scale: float = field(
        1.0, "The teacher's learning rate as a multiple of the student's; it follows the "
        "student's schedule (train.learning_rate, warm-up, cosine decay).", min=0.0, max=100.0)
