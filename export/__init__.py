"""SavedModel export in TensorFlow Serving's layout (``<base>/<model>/<version>/``).

Modules: ``signatures`` (names shared with ``serving/``; plain Python),
``recommender`` (scoring, cold-start scoring, embeddings, top-k retrieval),
``designer`` (generate, design, modify), ``item_encoder`` (the CNN tower as a
reusable, fine-tunable SavedModel), ``layout`` (version folders, warm-up
requests, model cards, models.config), ``bundle`` (``export_all``: all of them
from trained work directories, behind ``tfmodels export``). Nothing is imported here, so that
``from export import signatures`` stays free of TensorFlow.
"""
