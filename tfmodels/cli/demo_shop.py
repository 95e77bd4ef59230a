"""What the demo's shop does with the served models, over gRPC (``tfmodels demo``, ``tfmodels.cli.demo``)."""

from __future__ import annotations

import os
import time


def pick_users(split, n: int, seed: int = 0):
    import numpy as np

    offsets = split.train_offsets()
    counts = np.diff(offsets)
    ok = np.flatnonzero((split.test_item >= 0) & (counts >= 3))
    if len(ok) == 0:
        ok = np.flatnonzero(split.test_item >= 0)
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(ok, size=min(n, len(ok)), replace=False).tolist())


def shop_calls(target: str, out: str, runs: dict, args) -> dict:
    """What a shop backend does with the served models, over gRPC (serving.client.GrpcClient)."""
    import numpy as np

    from export import signatures as S
    from serving.client import GrpcClient
    from tfmodels import report as rep
    from tfmodels.data.preview import png_bytes

    from tfmodels import workdir as workdir_lib

    cfg = workdir_lib.load_config(runs["dvbpr"])
    dataset, split = workdir_lib.load_data(runs["dvbpr"])
    images = workdir_lib.image_array(runs["dvbpr"])
    user_ids = np.asarray(dataset.user_ids).astype(str)
    item_ids = np.asarray(dataset.item_ids).astype(str)
    names = list(dataset.category_names)
    cats = np.asarray(dataset.categories)
    offsets = split.train_offsets()
    sim_users = dataset.extra.get("users") if dataset.extra else None
    design_steps = max(1, cfg.design.steps)
    starts = min(max(2, cfg.design.starts // 2), S.MAX_IMAGES)
    report: dict = {"calls": []}

    def timed(name, fn, **info):
        t0 = time.time()
        result = fn()
        entry = {"call": name, "ms": round(1000 * (time.time() - t0), 1), **info}
        report["calls"].append(entry)
        return result, entry

    with GrpcClient(target, timeout=600.0) as client:
        # 1. Which models and signatures are up.
        report["status"] = {m: timed(f"status {m}", lambda m=m: client.status(m))[0] for m in S.MODEL_NAMES}
        report["signatures"] = {m: sorted(timed(f"metadata {m}", lambda m=m: client.metadata(m))[0])
                                for m in S.MODEL_NAMES}
        # 2. Score: every test user's held-out item against one random item of the catalogue.
        rng = np.random.default_rng(0)
        test_users = np.flatnonzero(split.test_item >= 0)[:500]
        rand_items = rng.integers(0, split.num_items, len(test_users))
        uids = list(user_ids[test_users]) * 2
        iids = list(item_ids[split.test_item[test_users]]) + list(item_ids[rand_items])
        scores, e = timed("score", lambda: client.score(uids, iids), batch=len(uids))
        s = np.asarray(scores.score)
        n = len(test_users)
        report["score"] = {"pairs": len(uids), "users": n, "shape": list(s.shape), "dtype": str(s.dtype),
                           "all_known": bool(np.all(scores.known)) if scores.known is not None else None,
                           "held_out_above_random_share": float(np.mean(s[:n] > s[n:])) if n else None}
        unknown, _ = timed("score (unknown ids)", lambda: client.score(["no-such-user"], [item_ids[0]]))
        report["score_unknown"] = {"score": float(np.asarray(unknown.score)[0]),
                                   "known": None if unknown.known is None else bool(np.asarray(unknown.known)[0])}
        # 3. Per user: recommend, design in their favourite category, modify one of their items.
        users = pick_users(split, args.users)
        report["users"] = []
        side = 72
        for u in users:
            uid = user_ids[u]
            hist = split.train_item[offsets[u]:offsets[u + 1]]
            recs, _ = timed("recommend", lambda: client.recommend([uid], k=8, exclude_purchased=True), user=uid, k=8)
            rec_ids = list(recs.item_ids[0])
            rec_idx = [int(np.flatnonzero(item_ids == r)[0]) for r in rec_ids]
            test_id = item_ids[split.test_item[u]]
            hist_cats = cats[hist][cats[hist] >= 0]
            fav = int(np.bincount(hist_cats).argmax()) if len(hist_cats) else 0
            design, _ = timed("design", lambda: client.design(uid, names[fav], starts=starts, steps=design_steps,
                                                             eta=1.0, seed=0),
                              user=uid, category=names[fav], starts=starts, steps=design_steps)
            # The best real item of that category for this user, scored by the served model.
            cat_items = np.flatnonzero(cats == fav)
            real, _ = timed("score (category)", lambda: client.score([uid] * len(cat_items),
                                                                     list(item_ids[cat_items])),
                            batch=int(len(cat_items)))
            real_scores = np.asarray(real.score)
            proto = int(hist[0])
            pcat = int(cats[proto]) if cats[proto] >= 0 else fav
            mod, _ = timed("modify", lambda: client.modify([uid], [png_bytes(images[proto])], [names[pcat]],
                                                          steps=design_steps, eta=1.0),
                           user=uid, item=item_ids[proto], steps=design_steps)
            entry = {"user": uid, "history": [item_ids[i] for i in hist], "recommended": rec_ids,
                     "recommended_scores": np.asarray(recs.score[0]).tolist(), "held_out_item": test_id,
                     "held_out_in_top8": test_id in rec_ids,
                     "design_category": names[fav], "design_shape": list(design.image.shape),
                     "design_scores": np.asarray(design.score).tolist(),
                     "category_real_items": int(len(cat_items)),
                     "category_real_mean": float(real_scores.mean()) if len(real_scores) else None,
                     "category_real_p90": float(np.percentile(real_scores, 90)) if len(real_scores) else None,
                     "category_real_max": float(real_scores.max()) if len(real_scores) else None,
                     "modify_item": item_ids[proto], "modify_category": names[pcat],
                     "modify_shape": list(mod.image.shape),
                     "modify_score_before": float(np.asarray(mod.score_before)[0]),
                     "modify_score_after": float(np.asarray(mod.score)[0])}
            if sim_users is not None:
                true_design = sim_users.true_score(np.full(len(design.image), u), np.asarray(design.image))
                true_real = sim_users.true_score(np.full(len(cat_items), u), np.asarray(images[cat_items]))
                entry["true_design"] = np.asarray(true_design).tolist()
                entry["true_real_p90"] = float(np.percentile(true_real, 90))
                entry["true_real_max"] = float(np.max(true_real))
            report["users"].append(entry)
            rows = [
                (f"user {_short(uid)}: purchase history (training items)", images[hist[:8]],
                 [names[cats[i]] if cats[i] >= 0 else "?" for i in hist[:8]]),
                ("recommended over gRPC (top 8, purchases excluded; 'HIT' = the held-out test item)",
                 images[rec_idx], [("HIT " if r == test_id else "") + f"{sc:.3g}"
                                   for r, sc in zip(rec_ids, np.asarray(recs.score[0]))]),
                (f"designed over gRPC for this user: {names[fav]} (best real item of the category scores "
                 f"{entry['category_real_max']:.3g})", design.image,
                 [f"{sc:.3g}" for sc in np.asarray(design.score)]),
                (f"modified over gRPC: item {item_ids[proto]} before -> after", 
                 np.stack([rep.fit_tiles(np.asarray(images[proto])[None], mod.image.shape[1])[0], mod.image[0]]),
                 [f"{entry['modify_score_before']:.3g}", f"{entry['modify_score_after']:.3g}"]),
            ]
            rep.save_png(rep.labelled_rows(rows, side=side), os.path.join(out, "pictures", f"user_{len(report['users'])}.png"))
        # 4. Real vs generated, per category (generate signature).
        rows = []
        for c, name in enumerate(names):
            members = np.flatnonzero(cats == c)
            if len(members) == 0:
                continue
            gen, _ = timed("generate", lambda: client.generate(name, n=6, seed=c), category=name, n=6)
            pick = rng.choice(members, size=min(6, len(members)), replace=False)
            tiles = np.concatenate([rep.fit_tiles(np.asarray(images[pick]), 64), rep.fit_tiles(gen.image, 64)])
            rows.append((f"{name}: 6 real | 6 generated", tiles, ["real"] * len(pick) + ["generated"] * len(gen.image)))
            report.setdefault("generate", {})[name] = list(gen.image.shape)
        if rows:
            rep.save_png(rep.labelled_rows(rows, side=64), os.path.join(out, "pictures", "real_vs_generated.png"))
    by_call: dict = {}
    for c in report["calls"]:
        by_call.setdefault(c["call"], []).append(c["ms"])
    report["latency_ms"] = {k: {"calls": len(v), "median": float(np.median(v)), "max": float(np.max(v))}
                            for k, v in by_call.items()}
    return report


def _short(text: str, n: int = 16) -> str:
    """Long ids (H&M customer ids are 64 hex digits) shortened for picture titles."""
    return text if len(text) <= n else text[:n - 3] + "..."
