"""Recipe keys of the flat cycle section (before `cycle.method`), read into today's shape.

Until the method registry (ferkeras.methods), a method was a flag or a value of another key
and its options were prefixed keys of `cycle`. Every such key still loads: it is rewritten to
its new spelling (a FutureWarning names both), so old recipes and the `recipe.yaml` of old
run folders give the same run. Two old keys that name different methods are an error.

    cycle.selector: pnp            -> cycle.method: pnp
    cycle.co_divide: true          -> cycle.method: co_divide
    cycle.crest: true              -> cycle.method: crest
    cycle.mpl: true                -> cycle.method: mpl
    cycle.threshold_mode: ada_cm   -> cycle.method: ada_cm
    cycle.noisy_mode: relabel      -> cycle.method: relabel   (noisy_mode: fixmatch -> dropped)
    cycle.noisy_mode: soft         -> cycle.method: soft
    cycle.<prefix>_<option>        -> cycle.<method>.<option>, e.g. cycle.pnp_eta -> cycle.pnp.eta
"""

from __future__ import annotations

import warnings

# old flag -> {value that named a method: the method}
METHOD_FLAGS = {
    "selector": {"pnp": "pnp"},
    "co_divide": {True: "co_divide"},
    "crest": {True: "crest"},
    "mpl": {True: "mpl"},
    "threshold_mode": {"ada_cm": "ada_cm"},
    "noisy_mode": {"relabel": "relabel", "soft": "soft"},
}
# flags whose other values were "off" and are dropped (the others stay as they are)
DROPPED_OFF = {"co_divide": False, "crest": False, "mpl": False, "noisy_mode": "fixmatch"}

# old flat option -> (section, option)
OPTIONS = {
    "pnp_label_smoothing": ("pnp", "label_smoothing"),
    "pnp_temperature": ("pnp", "temperature"),
    "pnp_eta": ("pnp", "eta"),
    "pnp_ood_weight": ("pnp", "ood_weight"),
    "pnp_aux_weight": ("pnp", "aux_weight"),
    "pnp_consistency_weight": ("pnp", "consistency_weight"),
    "h2e_rounds": ("h2e", "rounds"),
    "h2e_penalty": ("h2e", "penalty"),
    "co_divide_temperature": ("co_divide", "temperature"),
    "co_divide_mixup_alpha": ("co_divide", "mixup_alpha"),
    "co_divide_export": ("co_divide", "export"),
    "crest_alpha": ("crest", "alpha"),
    "crest_t_min": ("crest", "t_min"),
    "ada_cm_contrastive_weight": ("ada_cm", "contrastive_weight"),
    "ada_cm_temperature": ("ada_cm", "temperature"),
    "mpl_teacher_lr_scale": ("mpl", "teacher_lr_scale"),
    "relabel_threshold": ("relabel", "threshold"),
}


def new_spelling(key: str, value=None) -> str | None:
    """The new spelling of an old `cycle.<key>` (with its value for the flags), or None."""
    if key in OPTIONS:
        section, option = OPTIONS[key]
        return f"cycle.{section}.{option}"
    if key in METHOD_FLAGS and _names(key, value):
        return f"cycle.method: {_names(key, value)}"
    return None


def _names(key: str, value) -> str | None:
    """The method an old flag's value named, or None (a bool is never a str: True != "x")."""
    for on, method in METHOD_FLAGS[key].items():
        if type(on) is type(value) and on == value:
            return method
    return None


def translate_old_keys(values: dict) -> dict:
    """`values` (a nested recipe dict) with the old cycle keys in their new spelling; the dict
    is changed in place and returned. Raises ValueError when two keys name different methods.
    """
    cycle = values.get("cycle")
    if not isinstance(cycle, dict):
        return values
    named, moved = {}, []
    if "method" in cycle:
        named["cycle.method"] = cycle["method"]
    for key in METHOD_FLAGS:
        if key not in cycle or isinstance(cycle[key], dict):  # a dict is a new section
            continue
        value = cycle[key]
        method = _names(key, value)
        if method:
            named[f"cycle.{key}={value!r}"] = method
            del cycle[key]
            moved.append(f"cycle.{key}={value!r} -> cycle.method={method!r}")
        elif key in DROPPED_OFF and value == DROPPED_OFF[key]:
            del cycle[key]
            moved.append(f"cycle.{key}={value!r} -> (the default, dropped)")
    methods = set(named.values())
    if len(methods) > 1:
        raise ValueError(
            "Recipe keys name different methods; write one cycle.method "
            f"({', '.join(sorted(map(str, methods)))}). Received: "
            + ", ".join(f"{k} ({v})" if "=" in k else f"{k}={v!r}" for k, v in named.items()))
    if methods and "method" not in cycle:
        cycle["method"] = methods.pop()
    for key in [k for k in cycle if k in OPTIONS]:
        section, option = OPTIONS[key]
        target = cycle.setdefault(section, {})
        if not isinstance(target, dict):
            raise ValueError(f"Recipe key 'cycle.{key}' is now cycle.{section}.{option}, and "
                             f"cycle.{section} is not a section. Received: "
                             f"cycle.{section}={target!r}")
        if option in target and target[option] != cycle[key]:
            raise ValueError(f"Recipe keys 'cycle.{key}' (old) and 'cycle.{section}.{option}' "
                             f"(new) disagree. Received: {cycle[key]!r} and {target[option]!r}")
        target[option] = cycle.pop(key)
        moved.append(f"cycle.{key} -> cycle.{section}.{option}")
    if moved:
        warnings.warn("old recipe keys read in their new spelling: " + "; ".join(moved),
                      FutureWarning, stacklevel=3)
    return values
