"""The release rule: when a new model may replace the champion (issue 28). Fixed in code, before any run.

A challenger is promoted only when, on the same held-out photos (photos neither model learnt from,
checked by their hashes) and the same simulated open set:
1. it makes no dangerous error: no photo of a species that is not safe to call edible gets "edible"
   (FungiCLEF prices that error at 100 times a missed edible);
2. the open set holds: no unfamiliar species and no non-mushroom image gets "edible" or "edible with
   caution" (an unknown mushroom must read as possibly deadly);
3. its main-class top-1 is not lower than the champion's;
4. its rare-species top-1 is not lower than the champion's.
With no champion yet, 1 and 2 decide. Any failure is a refusal, and the reasons name the figures.
Why "not lower" and no tolerance: a release is 45 MB in every clone and a model swap in every
replica; a tie keeps the champion unless the challenger is no worse anywhere, and a figure that
dropped by one photo is a figure that dropped.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Figures:
    """What the rule reads from `evaluate`'s metrics.json."""

    main_top1: float | None
    rare_top1: float | None
    dangerous_errors: int
    open_set_errors: int
    photos: int
    photo_set: str  # the digest of the evaluated photos' hashes and labels: equal figures, equal photos

    @classmethod
    def from_metrics(cls, metrics: dict) -> Figures:
        safety = metrics["safety"]
        return cls(
            main_top1=metrics["main"]["top1"],
            rare_top1=metrics["fewshot"]["top1"],
            dangerous_errors=int(safety["all"]["dangerous_errors"]),
            open_set_errors=int(safety["open_set"]["dangerous_errors_incl_caution"]),
            photos=int(metrics["n"]),
            photo_set=str(metrics.get("photo_set", "")),
        )

    def as_tags(self) -> dict[str, str]:
        return {f"figure.{k}": "" if v is None else str(v) for k, v in asdict(self).items()}

    def summary(self) -> str:
        def pct(x):
            return "n/a" if x is None else f"{x:.3f}"

        return (f"main top-1 {pct(self.main_top1)}, rare top-1 {pct(self.rare_top1)}, dangerous errors "
                f"{self.dangerous_errors}, open-set errors {self.open_set_errors} on {self.photos} photos")


def release_rule(challenger: Figures, champion: Figures | None) -> list[str]:
    """Why the challenger may not replace the champion (empty: it may)."""
    reasons = []
    if challenger.dangerous_errors:
        reasons.append(f"{challenger.dangerous_errors} dangerous error(s): a species not safe to eat called "
                       "edible (the rule allows none)")
    if challenger.open_set_errors:
        reasons.append(f"open set: {challenger.open_set_errors} unfamiliar mushroom(s) or non-mushroom image(s) "
                       "called edible (the rule allows none)")
    if champion is None:
        return reasons
    if champion.photo_set != challenger.photo_set:
        reasons.append("the two models were measured on different photos; compare them on the same ones")
        return reasons
    for name, title in (("main_top1", "main-class top-1"), ("rare_top1", "rare-species top-1")):
        new, old = getattr(challenger, name), getattr(champion, name)
        if old is None:
            continue  # no such photos in the set: nothing to hold
        if new is None or new < old:
            reasons.append(f"{title} {'n/a' if new is None else f'{new:.3f}'} is lower than the champion's {old:.3f}")
    return reasons
