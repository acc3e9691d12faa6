"""Class balance per fold (the book counts labels with ``collections.Counter``; here per fold as well)."""
from __future__ import annotations

from collections import Counter

from .esc50 import N_FOLDS


def class_balance(clips) -> dict:
    """Clips per class and fold: {"folds", "classes": [{target, category, per_fold, total}], "per_fold", "total"}."""
    folds = list(range(1, N_FOLDS + 1))
    counts = Counter((c.target, c.fold) for c in clips)
    categories = {c.target: c.category for c in clips}
    classes = [{"target": t, "category": categories[t], "per_fold": [counts[t, f] for f in folds],
                "total": sum(counts[t, f] for f in folds)} for t in sorted(categories)]
    per_fold = Counter(c.fold for c in clips)
    return {"folds": folds, "classes": classes, "per_fold": [per_fold[f] for f in folds], "total": len(clips)}


def format_table(balance: dict) -> str:
    """The balance as a fixed-width text table, one row per class, totals last."""
    width = max([len("category")] + [len(c["category"]) for c in balance["classes"]])

    def row(target, category, counts, total) -> str:
        return f"{target:>6}  {category:<{width}}" + "".join(f"{n:>8}" for n in counts) + f"{total:>8}"

    header = row("target", "category", [f"fold {f}" for f in balance["folds"]], "total")
    rows = [row(c["target"], c["category"], c["per_fold"], c["total"]) for c in balance["classes"]]
    footer = row("", "all", balance["per_fold"], balance["total"])
    totals = sorted({c["total"] for c in balance["classes"]})
    summary = (f"{len(balance['classes'])} classes, {balance['total']} clips; clips per class: "
               + (f"{totals[0]} each" if len(totals) == 1 else f"{totals[0]} to {totals[-1]}"))
    rule = "-" * len(header)
    return "\n".join([header, rule, *rows, rule, footer, summary])
