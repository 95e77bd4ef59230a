"""The output side of ``benchmarks/design_quality.py``: number and row-label formatting, the pictures of a
setup (real vs generated, designs beside favourite real items, prototype modification, the eta trade-off
plot) and the ``results.md`` / ``results.json`` writer. The benchmark computes; these only draw and write.
"""

from __future__ import annotations

import os

import numpy as np
from tfmodels import files
from tfmodels.data.preview import image_grid, save_png, upscale


def fmt(x, digits=2):
    if x is None:
        return "-"
    if isinstance(x, str):
        return x
    return f"{x:.{digits}f}"


def guard_label(guard: dict) -> str:
    """", trust region 0.3" / ", realism floor 0.9" for a row's guard, "" for none."""
    return "".join(f", {k.replace('_radius', ' region').replace('_', ' ')} {v:g}" for k, v in sorted(guard.items()))


def save_real_vs_generated(path: str, gan_images, real_shown: dict, names: list[str], random_images: np.ndarray,
                           random_cats: np.ndarray, cols: int) -> None:
    """Per category (``real_shown``: category -> up to ``cols`` item indices), a row of real items and
    a row of unoptimised samples G(z, c) of that category."""
    tiles, labels = [], []
    for c, real in real_shown.items():
        fake = random_images[random_cats == c][:cols]
        for i in range(cols):
            tiles.append(np.asarray(gan_images[real[i]]) if i < len(real) else np.full_like(fake[0], 255))
            labels.append(names[c] if i == 0 else "")
        for i in range(cols):
            tiles.append(fake[i] if i < len(fake) else np.full_like(fake[0], 255))
            labels.append("generated" if i == 0 else "")
    save_png(image_grid(upscale(np.stack(tiles), 64), cols=2 * cols, labels=labels), path)


def save_designs(path: str, gan_images, designs: dict, favourites: dict, favourite_label: str) -> None:
    """Per (user, category) of ``favourites`` (-> item indices, best first), up to 4 designs
    (``designs[(user, category)]``) beside up to 4 favourite real items."""
    tiles, labels = [], []
    for (u, c), fav in favourites.items():
        des = designs[(int(u), int(c))][:4]
        for i, x in enumerate(des):
            tiles.append(x)
            labels.append(f"u{u} design" if i == 0 else "")
        tiles += [np.full_like(des[0], 255)] * (4 - len(des))
        labels += [""] * (4 - len(des))
        for i, j in enumerate(fav):
            tiles.append(np.asarray(gan_images[j]))
            labels.append(favourite_label if i == 0 else "")
    save_png(image_grid(upscale(np.stack(tiles), 64), cols=8, labels=labels), path)


def save_user_page(path: str, gan_images, names: list[str], categories, user: int, history, recommended,
                   recommended_scores, category: int, designs, design_scores, real_max: float) -> None:
    """One user's page: purchase history (training items), the recommender's top real items (history
    excluded), and the designs of one category at eta = 1 with their scores."""
    from tfmodels import report as rep

    rows = [(f"user {user}: purchase history (training items)", np.asarray(gan_images[np.sort(history)]),
             [names[categories[i]] if categories[i] >= 0 else "?" for i in np.sort(history)]),
            ("recommended (top 8 real items, purchases excluded; recommender's score)",
             np.asarray(gan_images[recommended]), [f"{x:.3g}" for x in recommended_scores]),
            (f"designed for this user at eta = 1: {names[category]} (the best real item of the category "
             f"scores {real_max:.3g})", np.asarray(designs), [f"{x:.3g}" for x in design_scores])]
    rep.save_png(rep.labelled_rows(rows, side=64), path)


def save_prototypes(path: str, modified: list[dict]) -> None:
    """One row per ``Designer.modify`` result: item | inversion | modified, each with its model score."""
    tiles, labels = [], []
    for m in modified:
        for key, text in (("original", "item"), ("before", "inverted"), ("after", "modified")):
            tiles.append(m[key])
            labels.append(f"{text} {m['score_' + key]:.1f}")
    save_png(image_grid(upscale(np.stack(tiles), 64), cols=3, labels=labels), path)


def plot_tradeoff(name: str, rows: list[dict], simulated: bool, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    references = [r for r in rows if r.get("objective") == "reference"]
    rows = [r for r in rows if r.get("objective", "model") == "model" and not r.get("guard")]
    kappa0 = rows[0].get("category_weight", 0.0)
    extra = [r for r in rows if r.get("category_weight", 0.0) != kappa0]
    rows = [r for r in rows if r.get("category_weight", 0.0) == kappa0]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key, xlabel in ((axes[0], "conditional_accuracy", "conditional accuracy (judge)"),
                            (axes[1], "frechet", "Frechet distance to real (judge features)")):
        series = [("above_max_model", "design > max real (model score)", "o-")]
        if simulated:
            series.append(("above_p90_true", "design > p90 real (true preference)", "s--"))
        for metric, label, style in series:
            xs = [r[key] for r in rows if r["eta"] != "random"]
            ys = [r[metric] for r in rows if r["eta"] != "random"]
            ax.plot(xs, ys, style, label=label)
            for r in rows:
                if r["eta"] != "random":
                    ax.annotate(f"eta={r['eta']:g}", (r[key], r[metric]), fontsize=8,
                                textcoords="offset points", xytext=(4, 4))
            rnd = [r for r in rows if r["eta"] == "random"]
            if rnd:
                ax.plot([rnd[0][key]], [rnd[0][metric]], "x", color="grey")
            if extra:
                ax.plot([r[key] for r in extra], [r[metric] for r in extra], style[0], color="black",
                        fillstyle="none", label=f"{label}, eta=1 + category term kappa")
                for r in extra:
                    ax.annotate(f"k={r['category_weight']:g}", (r[key], r[metric]),
                                fontsize=7, textcoords="offset points", xytext=(3, -9))
        for r, style in zip(references, (":", "-.")):
            ax.axvline(r[key], color="grey", linestyle=style, linewidth=1, label=f"{r['eta']} items")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("share of (user, category) pairs")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{name}: preference vs quality over eta (x = random samples; open = category term kappa)")
    fig.tight_layout()
    with files.replacing(path, ".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def write_outputs(out: str, results: dict) -> None:
    files.write_json(os.path.join(out, "results.json"), results)
    lines = [f"# Design quality ({results['mode']})", "", f"Machine: {results['machine']}", "",
             f"Command: `{results['command']}`", ""]
    for name, res in results["setups"].items():
        if "error" in res:
            lines += [f"## {name}", "", f"not run: {res['error']}", ""]
            continue
        sim = any("above_p90_true" in r for r in res["rows"])
        lines += [f"## {name}", "",
                  f"{res['users']} users x {len(res['categories'])} categories ({', '.join(res['categories'])}); "
                  f"R = {res['starts']} starts, S = {res['steps']} Adam steps; DVBPR steps {res['rec_steps']}, "
                  f"GAN steps {res['gan_step']}; "
                  f"judge accuracy on held-out real images {fmt(res['judge_accuracy'])}; training minutes in this run: "
                  f"DVBPR {fmt(res['rec_minutes'], 1)}, GAN {fmt(res['gan_minutes'], 1)} ('-': trained earlier "
                  f"or by another setup, reused).", ""]
        if res.get("recommended_above_p90_true") is not None:
            lines += [f"The recommender's top-ranked real item of the category beats the user's true p90 for "
                      f"{fmt(res['recommended_above_p90_true'])} of pairs (recommending instead of designing).", ""]
        head = ["eta", "> max real (model)", "> p90 real (model)"]
        if sim:
            head += ["> p90 real (true)", "> max real (true)", "true pref. design", "true p90 real"]
        imagenet = any(r.get("imagenet_frechet") is not None for r in res["rows"])
        head += ["cond. acc.", "Frechet (x floor)", f"diversity (real {fmt(res.get('real_diversity'))})",
                 "novelty (real)", "past D's p90"]
        head += ["ImageNet FD (x floor)"] if imagenet else []
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in res["rows"]:
            objective = r.get("objective", "model")
            label = {"model": str(r["eta"]), "reference": f"{r['eta']} (reference)"}.get(objective,
                                                                                     f"{r['eta']} (true taste)")
            if r.get("category_weight"):
                label += f", category term {r['category_weight']:g}"
            label += guard_label(r.get("guard", {}))
            cells = [label, fmt(r["above_max_model"]), fmt(r["above_p90_model"])]
            if sim:
                cells += [fmt(r["above_p90_true"]), fmt(r["above_max_true"]), fmt(r["true_mean"]),
                          fmt(r["true_real_p90_mean"])]
            cells += [fmt(r["conditional_accuracy"]), f"{fmt(r['frechet'])} ({fmt(r.get('frechet_ratio'), 1)})",
                      fmt(r.get("diversity")),
                      f"{fmt(r['novelty_mean'], 3)} ({fmt(r['novelty_real_mean'], 3)})", fmt(r.get("past_floor"))]
            if imagenet:
                cells.append(f"{fmt(r.get('imagenet_frechet'), 1)} ({fmt(r.get('imagenet_ratio'), 1)})")
            lines.append("| " + " | ".join(cells) + " |")
        lines += ["", "Prototype modification (eta = 1):", ""]
        for p in res["prototypes"]:
            text = (f"- user {p['user']}, item {p['item']} ({p['category']}): score {fmt(p['score_original'])} -> "
                    f"inverted {fmt(p['score_before'])} -> modified {fmt(p['score_after'])}; "
                    f"L1 {fmt(p['l1_before'], 3)} -> {fmt(p['l1_after'], 3)}")
            if "true_after" in p:
                text += f"; true {fmt(p['true_original'])} -> {fmt(p['true_before'])} -> {fmt(p['true_after'])}"
            lines.append(text)
        lines.append("")
    lines += ["Shares are over (user, category) pairs, comparing the best of R designs with that user's real "
              "items of the category. Quality columns judge all R designs per pair; Frechet distance uses the "
              "judge's 128-d features against one half of the held-out real images of the same categories, in "
              "brackets its ratio to the real-vs-real floor (the other half, same size and category mix); "
              "diversity: mean pairwise judge-feature distance of the R designs of one pair, in the header the "
              "same within a category of held-out real items; novelty is the RMS pixel distance (0..1) to the nearest "
              "GAN training image, in brackets held-out real images against the other 80% of the catalogue. 'random' = unoptimised samples G(z, c). "
              "Reference rows are real catalogue items outside the held-out images, R per pair: 'recommended "
              "real' the R the recommender ranks highest for the user (the distance choosing for one taste "
              "costs by itself; '> p90 real (true)': its top item), 'random real' R at random (images the judge "
              "trained on). "
              "past D's p90: share of designs whose realism penalty exceeds the 0.9-quantile of D's penalty on "
              "the catalogue's real items of their category. ImageNet FD: Frechet distance in EfficientNet-Lite0's "
              "pooled ImageNet features (1280-d, images upscaled) to one half of the held-out real images of "
              "the same categories, in brackets its ratio to the real-vs-real floor (the other half, same size "
              "and category mix); not comparable with published FIDs (another network, small samples)."]
    files.write_text(os.path.join(out, "results.md"), "\n".join(lines) + "\n")
