"""Every model of a trained recommender (+ GAN) exported at once: ``export_all``, behind ``tfmodels export``.

Writes, under the export base E, ``recommender/<N>/``, ``item_encoder/<N>/`` and,
with a GAN work directory, ``designer/<N>/`` (each with a warm-up file and a
model card in ``assets.extra/``), then ``E/models.config`` listing every model
in E. The work directories are reopened from themselves (``tfmodels.workdir``):
the raw data need not be there.
"""

from __future__ import annotations

import tfmodels  # noqa: F401  (tf-keras before TensorFlow)

import os
import time


def export_all(rec_workdir: str, gan_workdir: str, export_base: str, version: int | None = None,
               best: bool = True, config_base_path: str = "", log=print) -> dict:
    """Exports the recommender, the item encoder and (with ``gan_workdir``) the designer.

    Returns:
      {model name: version folder written, ..., "models.config": its path}.
    """
    from export import signatures as S
    from export.designer import build_designer_module, warmup_inputs as designer_warmup
    from export.item_encoder import build_item_encoder, warmup_inputs as encoder_warmup
    from export.layout import model_card, save_version, write_models_config
    from export.recommender import build_recommender_module, warmup_inputs as recommender_warmup
    from tfmodels import workdir as workdir_lib
    from tfmodels.data.preview import png_bytes
    from tfmodels.design import build_designer
    from tfmodels.training.recommender import load_dvbpr

    if version is not None and version < 1:
        raise ValueError(f"--version must be a positive integer, got {version}")
    for w in (rec_workdir, gan_workdir):
        if w and not os.path.isdir(w):
            raise FileNotFoundError(f"work directory {w!r} does not exist")
    t0 = time.time()
    log(f"[export] loading the recommender from {rec_workdir}")
    model, dataset, split, images = load_dvbpr(rec_workdir, best=best)
    rec_cfg = workdir_lib.load_config(rec_workdir)
    sample_png = png_bytes(images[0])
    written = {}

    rec = build_recommender_module(model, dataset, split, images)
    sigs = rec.signatures()
    settings = {"num_users": rec.num_users, "num_items": rec.num_items, "embedding_dim": rec.embedding_dim,
                "resolution": rec.resolution, "unknown_ids": "known=False, score 0",
                "exclude_purchased": "the split's training items"}
    written[S.RECOMMENDER] = save_version(
        rec, export_base, S.RECOMMENDER, sigs, version,
        extra_files={"model_card.json": model_card(S.RECOMMENDER, {"recommender": rec_workdir}, sigs, settings)},
        warmup=recommender_warmup(rec, dataset.user_ids, dataset.item_ids, sample_png))
    log(f"[export] {S.RECOMMENDER}: {written[S.RECOMMENDER]}")

    enc = build_item_encoder(model.item_tower, l2=rec_cfg.train.lambda_cnn)
    sigs = enc.signatures()
    written[S.ITEM_ENCODER] = save_version(
        enc, export_base, S.ITEM_ENCODER, sigs, version,
        extra_files={"model_card.json": model_card(S.ITEM_ENCODER, {"recommender": rec_workdir}, sigs,
                                                   {"resolution": enc.resolution, "embedding_dim": enc.embedding_dim,
                                                    "input": "float32 [B, R, R, 3] in [-1, 1] = x / 127.5 - 1",
                                                    "regularization_l2": rec_cfg.train.lambda_cnn})},
        warmup=encoder_warmup(enc, images))
    log(f"[export] {S.ITEM_ENCODER}: {written[S.ITEM_ENCODER]}")

    if gan_workdir:
        log(f"[export] loading the GAN from {gan_workdir}")
        # Its design settings are the GAN run's (config.json); design.category_weight > 0 without a
        # classifier is the design objective's own error.
        designer = build_designer(rec_workdir, gan_workdir, best=best, recommender=(model, dataset, split, images))
        des = build_designer_module(designer)
        sources = {"recommender": rec_workdir, "gan": gan_workdir}
        if designer.classifier is not None:  # the category term's classifier, held by the SavedModel
            sources["classifier"] = designer.config.classifier_from
        sigs = des.signatures()
        written[S.DESIGNER] = save_version(
            des, export_base, S.DESIGNER, sigs, version,
            extra_files={"model_card.json": model_card(
                S.DESIGNER, sources, sigs, des.settings())},
            warmup=designer_warmup(des, dataset.user_ids[0], sample_png))
        log(f"[export] {S.DESIGNER}: {written[S.DESIGNER]}")

    written["models.config"] = write_models_config(export_base, base_path_prefix=config_base_path or None)
    log(f"[export] {written['models.config']} ({time.time() - t0:.1f}s)")
    return written
