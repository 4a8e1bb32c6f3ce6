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


def resolve_class_names(names) -> tuple[str, ...]:
    """A user-defined class list, each name mapped onto its canonical expression where it is
    one (e.g. 'sadness' -> 'sad', 'angry' -> 'anger'), other names kept (lower-cased).

    names: a sequence of names, or one comma-separated string ('anger,contempt,...').
    Raises ValueError for fewer than two classes or for two names meaning one class.
    """
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    raw = [str(n).strip() for n in names]
    if any(not n for n in raw) or len(raw) < 2:
        raise ValueError(f"class_names must list at least two non-empty names. Received: {raw}")
    out = tuple(canonical_name(n) or n.lower() for n in raw)
    seen = {}
    for name, given in zip(out, raw, strict=True):
        if name in seen:
            raise ValueError(f"class_names {seen[name]!r} and {given!r} both mean {name!r}. "
                             f"Received: {raw}")
        seen[name] = given
    return out


def class_names_for(data_cfg) -> tuple[str, ...]:
    """The class names of a recipe's data section: `data.class_names` when given, else the
    named `data.class_set`."""
    custom = getattr(data_cfg, "class_names", "")
    if custom:
        return resolve_class_names(custom)
    return get_class_names(data_cfg.class_set)


def class_key(name: str) -> str:
    """The key a folder or column name is matched on: its canonical expression, else itself
    lower-cased (a user-defined class such as 'pain')."""
    return canonical_name(name) or name.strip().lower()
