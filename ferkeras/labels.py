"""Canonical expression names, the class sets a recipe can pick, and per-dataset label maps.

Every source maps its own codes to canonical names; the recipe's class set then fixes the
order of class ids. Keeping the maps here means no loader hard-codes a class count.
"""

from __future__ import annotations

EXPRESSIONS = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")

CLASS_SETS: dict[str, tuple[str, ...]] = {
    # AffectNet's own code order (0 Neutral ... 7 Contempt).
    "affectnet8": EXPRESSIONS,
    "affectnet7": EXPRESSIONS[:7],
    # FER2013's order: 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral.
    "fer2013": ("anger", "disgust", "fear", "happy", "sad", "surprise", "neutral"),
    # RAF-DB basic, labels 1..7: Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral.
    "rafdb": ("surprise", "fear", "disgust", "happy", "sad", "anger", "neutral"),
}

# Source code -> canonical name. Codes missing from a map are "not an expression".
AFFECTNET_CODES = {i: name for i, name in enumerate(EXPRESSIONS)}
AFFECTNET_EXCLUDED_CODES = {8: "none", 9: "uncertain", 10: "no-face"}
FER2013_CODES = dict(enumerate(CLASS_SETS["fer2013"]))
RAFDB_CODES = {i + 1: name for i, name in enumerate(CLASS_SETS["rafdb"])}
# FERPlus vote columns, in file order, and the canonical name of each (None: not an expression).
FERPLUS_COLUMNS = (
    ("neutral", "neutral"),
    ("happiness", "happy"),
    ("surprise", "surprise"),
    ("sadness", "sad"),
    ("anger", "anger"),
    ("disgust", "disgust"),
    ("fear", "fear"),
    ("contempt", "contempt"),
    ("unknown", None),
    ("NF", None),
)

# Common spellings of class folder names (Kaggle FER2013, RAF-DB exports, AffectNet dumps).
ALIASES = {
    "neutral": "neutral",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "sad": "sad",
    "sadness": "sad",
    "surprise": "surprise",
    "surprised": "surprise",
    "fear": "fear",
    "fearful": "fear",
    "disgust": "disgust",
    "disgusted": "disgust",
    "anger": "anger",
    "angry": "anger",
    "contempt": "contempt",
}


def get_class_names(class_set: str) -> tuple[str, ...]:
    """Class names, in id order, of a named class set."""
    if class_set not in CLASS_SETS:
        raise ValueError(
            f"Unknown class set {class_set!r}. Valid class sets: {sorted(CLASS_SETS)}"
        )
    return CLASS_SETS[class_set]


def canonical_name(name: str) -> str | None:
    """The canonical expression for a folder or column name, or None if it is not one."""
    return ALIASES.get(name.strip().lower())
