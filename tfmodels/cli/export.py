"""``tfmodels export``: trained work directories -> SavedModels in TensorFlow Serving's layout.

Writes, under the export base E, ``recommender/<N>/`` (scoring, cold-start scoring,
embeddings, top-k retrieval), ``item_encoder/<N>/`` (the CNN tower as a reusable
SavedModel) and, with a GAN work directory, ``designer/<N>/`` (generate, design,
modify), each with a warm-up file and a model card in ``assets.extra/``, then
``E/models.config`` listing every model in E. N is the next free version of each
model unless ``--version`` is given. See ``export/`` for the signatures.
"""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export", help="export trained models as SavedModels for TensorFlow Serving",
        description=__doc__.split("\n\n")[1])
    p.add_argument("--rec-workdir", required=True, help="DVBPR work directory (tfmodels train dvbpr --workdir R)")
    p.add_argument("--gan-workdir", default="", help="GAN work directory (tfmodels train gan --workdir G); "
                                                     "without it the designer is not exported")
    p.add_argument("--export-base", required=True, help="export folder E (TensorFlow Serving's base paths)")
    p.add_argument("--version", type=int, default=None,
                   help="version number for every exported model (default: each model's latest + 1)")
    p.add_argument("--last", action="store_true", help="use the recommender's last checkpoint, not W/best")
    p.add_argument("--config-base-path", default="",
                   help="E as the server sees it, for models.config (default: the absolute path of E; "
                        "e.g. /models for the tensorflow/serving container)")
    p.set_defaults(func=run)


def run(args) -> int:
    import json
    import sys

    def log(message):
        print(message, file=sys.stderr, flush=True)

    from export.bundle import export_all

    written = export_all(args.rec_workdir, args.gan_workdir, args.export_base, args.version,
                         best=not args.last, config_base_path=args.config_base_path, log=log)
    print(json.dumps(written, indent=2))
    return 0
