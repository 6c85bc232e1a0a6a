"""The report's summary paragraph, written from the numbers the sections computed."""

from __future__ import annotations

from dstlab.analysis.facts import Facts


def _blocks(n: int) -> str:
    return f"{n} block" if n == 1 else f"{n} blocks"


def _p(test) -> str:
    """Raw p, and Holm's when the test was adjusted within a family."""
    text = f"p = {test.pvalue:.3g}"
    if test.pvalue_holm is not None:
        text += f", Holm-adjusted {test.pvalue_holm:.3g}"
    return text


def _rank_sentence(test, label: str) -> str:
    ranks = test.mean_ranks
    best, best_rank = ranks.index[0], float(ranks.iloc[0])
    text = f"{label}, {best} has the best mean rank ({best_rank:.2f} over {_blocks(test.n_blocks)}"
    if len(ranks) < 2:
        return text + ")."
    second, second_rank = ranks.index[1], float(ranks.iloc[1])
    text += f"; next {second} at {second_rank:.2f})"
    if test.pvalue is None:
        return text + f", but {test.reason}, so no significance test was run."
    if not test.significant:
        return text + (
            f"; the {test.test.split(' ')[0]} test finds no significant difference between the "
            f"criteria ({_p(test)})."
        )
    beaten = [c for c in ranks.index[1:] if test.differs(best, c)]
    if test.differs(best, second):
        what = "all other criteria" if len(beaten) == len(ranks) - 1 else ", ".join(beaten)
        return (
            text
            + f"; it is significantly better than {what} ({_p(test)}"
            + (f", Nemenyi CD {test.cd:.2f})." if test.cd is not None else ").")
        )
    text += (
        f"; the criteria differ ({_p(test)}) but {best} is not significantly better than {second}"
    )
    if test.cd is not None:
        text += f" (Nemenyi CD {test.cd:.2f})"
    if beaten:
        text += f"; it does beat {', '.join(beaten)}"
    return text + "."


def summarize(facts: Facts) -> str:
    """One paragraph; every sentence depends on a computed number, none is fixed text."""
    used = facts.used
    if not facts.total:
        return "The study has no runs yet, so there is nothing to summarise."
    if not used:
        return f"None of the {facts.total} runs has finished, so there is nothing to summarise."
    out = [f"{used} of {facts.total} runs finished and are analysed ({facts.metric})."]
    by_band = {t.band: t for t in facts.tests}
    low = next((t for b, t in by_band.items() if b.startswith("density <=")), None)
    if low is not None:
        out.append(_rank_sentence(low, "At low density (≤ 0.1)"))
    if "all" in by_band:
        out.append(_rank_sentence(by_band["all"], "Over all blocks"))
    tied = facts.tied_lowest
    if tied:
        out.append(
            f"At density {tied.density:g}, {tied.criterion} is best or statistically tied "
            f"with the best in {tied.count} of {_blocks(tied.blocks)}."
        )
    for setup, f in list(facts.lowest.items())[:4]:
        text = (
            f"On {setup} at density {f.density:g}, the most accurate DST run is "
            f"{f.criterion} with {f.growth} growth ({f.mean:.3f}"
        )
        if f.dense is not None:
            gap = f.mean - f.dense
            text += f", {abs(gap):.3f} {'above' if gap >= 0 else 'below'} dense at {f.dense:.3f}"
        out.append(text + ").")
    for setup, top, bottom in facts.similarity[:2]:
        text = (
            f"On {setup}, the most similar choices are {top.criterion_a} and {top.criterion_b} "
            f"(Jaccard {top.jaccard:.2f}), the least similar {bottom.criterion_a} and "
            f"{bottom.criterion_b} ({bottom.jaccard:.2f})"
        )
        random = facts.similarity_random.get(setup)
        if random is not None and random == random:  # NaN: not recorded
            text += f"; two random removals of the same sizes would give {random:.2f}"
        out.append(text + ".")
    periods = facts.update_period
    if periods:
        total = sum(periods.values())
        dt, count = max(periods.items(), key=lambda kv: (kv[1], -kv[0]))
        out.append(f"The best update period is ΔT = {dt} in {count} of {total} curves.")
    dyn = facts.dynamics
    if dyn:
        out.append(
            f"At the last update the ITOP rate ranges from {dyn.min_itop:.2f} to "
            f"{dyn.itop:.2f} ({dyn.criterion}, {dyn.growth} growth, {dyn.setup})."
        )
    return " ".join(out)
