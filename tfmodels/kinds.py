"""The registry of model kinds: the one place that lists them.

Each ``Kind`` says how to train it (``train(cfg, workdir)``), how to reopen a
trained work directory as a recommender's scorer (recommenders only), which
config settings fix the shape of its checkpoint (the resume guard of
``tfmodels.workdir.check_resumable``) and which field is its step cap. The CLI
(``tfmodels train``, ``evaluate``), the demo and the benchmarks read the list
from here. Training modules are imported only when a kind is used, so listing
kinds (``--help``) does not start TensorFlow.
"""

from __future__ import annotations

import dataclasses
import importlib

# What identifies the data a run was trained on (not where it lives: data.data_dir and
# data.cache_dir may change between runs, the recorded ids are checked instead).
DATA_KEYS = ("data.dataset", "data.category_column", "data.max_items", "data.seed", "data.skip_bad_images",
             "world.num_items", "world.num_users", "world.interactions_per_user", "world.taste_strength",
             "world.simulate", "world.seed")
IMAGE_KEYS = ("data.dataset", "data.category_column", "data.max_items", "data.skip_bad_images", "world.num_items",
              "world.seed")
"""What identifies the images and categories (the classifier and the GAN see no users)."""
TOWER_KEYS = ("data.resolution", "model.embedding_dim", "model.width", "model.fc_units", "model.dropout",
              "model.tower", "model.tower_weights", "model.frozen_stages")


@dataclasses.dataclass(frozen=True)
class Kind:
    """One model kind; ``train`` and ``load_scorer`` name functions as "module:function"."""

    name: str
    help: str
    train_fn: str
    """``f(cfg, workdir, **data) -> loop summary``."""
    steps_key: str
    """The config field that caps its steps (``train.minutes`` is the time budget of every kind)."""
    resume_keys: tuple[str, ...]
    """Settings a resumed run must keep (they shape the checkpoint or the data)."""
    scorer_fn: str = ""
    """``f(workdir, best) -> (score_fn, dataset, split)`` for recommenders; empty otherwise."""

    @property
    def recommender(self) -> bool:
        return bool(self.scorer_fn)

    def train(self, cfg, workdir: str, *data, **kwargs) -> dict:
        """Trains (or resumes) into ``workdir``; ``data`` as the kind's train function takes it."""
        return _resolve(self.train_fn)(cfg, workdir, *data, **kwargs)

    def load_scorer(self, workdir: str, best: bool = True):
        if not self.recommender:
            raise ValueError(f"{workdir} holds a {self.name!r} model, not a recommender "
                             f"(recommenders: {', '.join(RECOMMENDERS)})")
        return _resolve(self.scorer_fn)(workdir, best=best)

    def steps(self, cfg) -> int:
        section, _, field = self.steps_key.partition(".")
        return int(getattr(getattr(cfg, section), field)) if self.steps_key else 1


def _resolve(ref: str):
    module, _, fn = ref.partition(":")
    return getattr(importlib.import_module(module), fn)


_REC = "tfmodels.training.recommender"
_BASE = "tfmodels.training.baselines"
KINDS = {k.name: k for k in (
    Kind("pop", "PopRank: items ranked by training popularity", f"{_BASE}:train_pop", "", DATA_KEYS,
         scorer_fn=f"{_BASE}:load_scorer"),
    Kind("bpr-mf", "BPR-MF: matrix factorisation trained by BPR (no images)",
         f"{_BASE}:train_bpr_mf", "baseline.steps", DATA_KEYS + ("baseline.latent_dim",),
         scorer_fn=f"{_BASE}:load_scorer"),
    Kind("vbpr", "VBPR: BPR-MF plus frozen image features of a classifier or of an ImageNet backbone "
         "(baseline.features_from)",
         f"{_BASE}:train_vbpr", "baseline.steps",
         DATA_KEYS + ("baseline.latent_dim", "baseline.visual_dim", "baseline.features_from"),
         scorer_fn=f"{_BASE}:load_scorer"),
    Kind("dvbpr", "DVBPR: the CNN item tower trained jointly with user vectors by BPR (the paper's model)",
         f"{_REC}:train_dvbpr", "train.steps", DATA_KEYS + TOWER_KEYS + ("train.lambda_cnn_to",), scorer_fn=f"{_REC}:load_scorer"),
    Kind("classifier", "the category classifier: the project's own pre-trained CNN (DVBPR's model.init_from, "
         "VBPR's features, the design's category term)", "tfmodels.training.classifier:train_classifier",
         "classifier.steps", IMAGE_KEYS + TOWER_KEYS),
    Kind("gan", "the category-conditional GAN that design searches", "tfmodels.training.gan:train_gan",
         "gan.steps", IMAGE_KEYS + ("gan.resolution", "gan.noise_dim", "gan.base_channels", "gan.grey", "gan.ema",
          "gan.upsample", "gan.spectral_norm")),
)}
RECOMMENDERS = tuple(name for name, kind in KINDS.items() if kind.recommender)


def get(name: str) -> Kind:
    """The Kind called ``name``; ValueError listing the known ones."""
    try:
        return KINDS[name]
    except KeyError:
        raise ValueError(f"unknown model kind {name!r}; choose one of {', '.join(KINDS)}") from None


def of_workdir(workdir: str) -> Kind:
    """The Kind of a trained work directory (its model.json)."""
    from tfmodels import workdir as workdir_lib

    return get(workdir_lib.read_model_json(workdir).get("kind"))


def load_scorer(workdir: str, best: bool = True):
    """(score_fn, dataset, split) of any trained recommender work directory, from the directory alone.

    ``score_fn(user_idx int [B]) -> float32 [B, num_items]``; never-trained items
    are scored by the rule of ``tfmodels.evaluation``.
    """
    return of_workdir(workdir).load_scorer(workdir, best=best)
