"""One entry point from a config to a Dataset: ``load_dataset(cfg)``.

Dispatches on ``cfg.data.dataset``:

- ``hm``: the H&M Kaggle layout (``tfmodels.data.hm``), category column ``cfg.data.category_column``;
- ``dvbpr-npy``: the paper's pickled .npy files (needs ``cfg.data.allow_pickle``);
- ``generic``: interactions.csv + items.csv;
- ``fashion-mnist``: idx files, ``cfg.data.max_items`` to cap, no users;
- ``garments``: procedural garments with simulated users (``tfmodels.data.simulated.build_world``).

With ``cfg.data.skip_bad_images`` items whose image is missing or corrupt are
dropped first (with a printed count; finding corrupt images decodes every image
once, into the same cache that training then reuses). With ``cfg.world.simulate``
the dataset's own interactions are replaced by simulated users over its images.
Runs on the host.
"""

from __future__ import annotations

from tfmodels.data.dataset import Dataset

DATASETS = ("hm", "dvbpr-npy", "generic", "fashion-mnist", "garments")


def read_dataset(cfg) -> Dataset:
    """The dataset as its files describe it: no bad-image filtering, no simulation ("garments" excepted)."""
    d = cfg.data
    name = d.dataset
    if name == "hm":
        from tfmodels.data.hm import read_hm

        return read_hm(d.data_dir, category_column=d.category_column)
    if name == "dvbpr-npy":
        from tfmodels.data.dvbpr_npy import read_dvbpr_npy

        return read_dvbpr_npy(d.data_dir, allow_pickle=d.allow_pickle)
    if name == "generic":
        from tfmodels.data.generic import read_generic

        return read_generic(d.data_dir)
    if name == "fashion-mnist":
        from tfmodels.data.fashion_mnist import read_fashion_mnist

        return read_fashion_mnist(d.data_dir, max_items=d.max_items)
    if name == "garments":
        from tfmodels.data.simulated import build_world

        return build_world(cfg, images=None, categories=None, category_names=None)
    raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")


def load_dataset(cfg) -> Dataset:
    """Reads the dataset ``cfg.data`` names, drops bad images if asked, simulates users if asked.

    Args:
      cfg: a ``tfmodels.config.Config``.

    Returns:
      Dataset (for "garments" or ``cfg.world.simulate``: with ``extra["users"]``
      holding the SimulatedUsers).

    Raises:
      ValueError / FileNotFoundError: with the file, column or id at fault.
    """
    dataset = read_dataset(cfg)
    if cfg.data.dataset == "garments":
        return dataset
    if cfg.data.skip_bad_images:
        from tfmodels.data.images import drop_bad_images

        dataset = drop_bad_images(dataset, cfg.data.resolution, cfg.data.cache_dir)
    if cfg.world.simulate:
        from tfmodels.data.simulated import build_world

        dataset = build_world(cfg, images=dataset.images, categories=dataset.categories,
                              category_names=dataset.category_names, item_ids=dataset.item_ids, name=dataset.name)
    return dataset


def load_for_training(cfg):
    """(dataset, split) for a recommender: ``load_dataset`` then ``leave_one_out`` with ``cfg.data.seed``.

    Raises:
      ValueError: when the dataset has no users or interactions (an image-only set).
    """
    from tfmodels.data.splits import leave_one_out

    dataset = load_dataset(cfg)  # drops bad images itself when cfg.data.skip_bad_images
    if dataset.num_users == 0 or dataset.num_interactions == 0:
        raise ValueError(f"dataset {dataset.name!r} has no users or interactions to train a recommender on "
                         f"(set world.simulate=true to simulate users over its images)")
    return dataset, leave_one_out(dataset, seed=cfg.data.seed)
